"""A cell's peak memory depends on the cell, not on what ran before it in the process: a linear
probe measured right after a full fine-tune in one process vs the same probe alone in a fresh one
(goal: within 10 %). The cells run through transferlab.pipeline, as compare's threads run them."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, Figure

CELL = """
import json, sys
from pathlib import Path
from transferlab.config import checked, compose
from transferlab.pipeline import run_cell
root, strategies = Path(sys.argv[1]), sys.argv[2].split(",")
peaks = {}
for name in strategies:
    cfg = checked(compose(["data=bbc_news", "data.train_size=50", f"strategy={name}",
                           "trainer.enable_progress_bar=false", f"paths.cache_dir={root / 'cache'}"]), "benchmark")
    run_cell(cfg, root / name)
    peaks[name] = json.loads((root / name / "model.json").read_text())["peak_memory_mb"]
print(json.dumps(peaks))
"""


def peaks(root: Path, strategies: list[str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", CELL, str(root), ",".join(strategies)], cwd=ROOT,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        after = peaks(Path(tmp) / "after", ["finetune_full", "linear_probe"])
        alone = peaks(Path(tmp) / "alone", ["linear_probe"])
    ratio = after["linear_probe"] / alone["linear_probe"]
    return [Figure("linear probe peak memory after a fine-tune in the same process vs alone (MB)",
                   after["linear_probe"], alone["linear_probe"], "MB", ratio, "<= 1.1x",
                   f"BBC 50 labels, MiniLM; the fine-tune before it peaked at {after['finetune_full']:.0f} MB")]
