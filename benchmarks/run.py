"""Every benchmark, one line per figure, then benchmarks/RESULTS.md with this machine's description.

    .venv/bin/python benchmarks/run.py            # all (about 15 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/run.py head sweep # some (their rows of RESULTS.md are replaced)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, Figure  # noqa: E402

ALL = ("extraction", "finetune", "head", "sweep", "pipeline", "peak_memory", "budget")


def machine() -> str:
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")),
                 platform.processor())
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} (CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads), "
            f"native bf16: {', '.join(bf16) or 'none (bf16 is emulated, expect it slower than fp32)'}")


NOTES = "\n## Notes"  # written by hand below the table; a run keeps it


def write_results(new: list[Figure]) -> Path:
    """RESULTS.md from every figure measured so far: a run of some benchmarks replaces their rows."""
    store = ROOT / "benchmarks" / "results.json"
    known = {f["name"]: f for f in json.loads(store.read_text())} if store.exists() else {}
    known.update({f.name: dataclasses.asdict(f) for f in new})
    store.write_text(json.dumps(list(known.values()), indent=2) + "\n")
    figures = [Figure(**f) for f in known.values()]
    rows = "\n".join(f"| {f.name} | {f.ours:.3g} | {f.baseline:.3g} | {f.ratio:.2f}x | {f.goal or '-'} | "
                     f"{ {True: 'met', False: 'not met', None: 'reported'}[f.met]} | {f.note} |" for f in figures)
    path = ROOT / "benchmarks" / "RESULTS.md"
    notes = path.read_text().partition(NOTES)[2] if path.exists() else ""
    path.write_text(f"# Benchmark results\n\nMeasured {date.today()} by `python benchmarks/run.py` on: {machine()}.\n\n"
                    "| figure | ours | baseline | ratio | goal | | notes |\n|---|---|---|---|---|---|---|\n"
                    f"{rows}\n" + (NOTES + notes if notes else ""))
    return path


def main(names: list[str]) -> None:
    from transferlab.trainer import quiet_lightning

    quiet_lightning()
    print(machine(), flush=True)
    figures = []
    for name in names or ALL:
        for figure in importlib.import_module(name).measure():
            print(figure.line(), flush=True)
            figures.append(figure)
    print(f"written: {write_results(figures)}")


if __name__ == "__main__":
    main(sys.argv[1:])
