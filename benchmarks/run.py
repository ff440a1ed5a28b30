"""Every benchmark, one line per figure, then benchmarks/RESULTS.md with this machine's description.

    .venv/bin/python benchmarks/run.py            # all (about 35 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/run.py head sweep # some (their rows of RESULTS.md are replaced)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, Figure  # noqa: E402

ALL = ("extraction", "finetune", "head", "sweep", "pipeline", "peak_memory", "budget")


def machine() -> tuple[str, str]:
    """(key, description) of this machine: results are kept per CPU model and bf16 capability."""
    import torch

    from transferlab.precision import NATIVE_BF16_FLAGS, cpu_info, extraction, training

    model, flags = cpu_info()
    bf16 = [f for f in NATIVE_BF16_FLAGS if f in flags]
    key = f"{model}, {os.cpu_count()} cores, native bf16: {', '.join(bf16) or 'none'}"
    auto = f"`auto` precision here: extraction {extraction('auto', 'cpu')}, fine-tuning {training('auto', 'cpu')}"
    return key, (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} (CPU capability "
                 f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads), native bf16: "
                 f"{', '.join(bf16) or 'none (bf16 is emulated, expect it slower than fp32)'}; {auto}")


NOTES = "\n## Notes"  # written by hand below the tables; a run keeps it
STORE = ROOT / "benchmarks" / "results.json"


def table(figures: list[Figure]) -> str:
    rows = "\n".join(f"| {f.name} | {f.ours:.3g} | {f.baseline:.3g} | {f.ratio:#.3g}x | {f.goal or '-'} | "
                     f"{ {True: 'met', False: 'not met', None: 'reported'}[f.met]} | {f.note} |" for f in figures)
    return "| figure | ours | baseline | ratio | goal | | notes |\n|---|---|---|---|---|---|---|\n" + rows


def write_results(new: list[Figure]) -> Path:
    """RESULTS.md with one section per machine: a run replaces its own machine's rows of the
    benchmarks it ran, and leaves other machines' sections as they were."""
    from transferlab.atomic import atomic_path, write_json

    machines = json.loads(STORE.read_text()) if STORE.exists() else {}
    key, description = machine()
    mine = machines.setdefault(key, {"figures": {}})
    mine.update(description=description, date=str(date.today()))
    mine["figures"].update({f.name: dataclasses.asdict(f) for f in new})
    write_json(STORE, machines)
    sections = [f"## {k}\n\nMeasured {m['date']} by `python benchmarks/run.py` on: {m['description']}.\n\n"
                + table([Figure(**f) for f in m["figures"].values()]) for k, m in machines.items()]
    path = ROOT / "benchmarks" / "RESULTS.md"
    notes = path.read_text().partition(NOTES)[2] if path.exists() else ""
    with atomic_path(path) as tmp:
        tmp.write_text("# Benchmark results\n\nOne section per machine (CPU model and native bf16); each row's "
                       "notes say which precision ran.\n\n" + "\n\n".join(sections) + "\n" + (NOTES + notes if notes else ""))
    return path


def main(names: list[str]) -> None:
    from transferlab.trainer import quiet_lightning

    quiet_lightning()
    print(machine()[1], flush=True)
    figures = []
    for name in names or ALL:
        for figure in importlib.import_module(name).measure():
            print(figure.line(), flush=True)
            figures.append(figure)
    print(f"written: {write_results(figures)}")


if __name__ == "__main__":
    main(sys.argv[1:])
