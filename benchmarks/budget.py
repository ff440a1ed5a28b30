"""compare.budget on real models: a 3-minute budget on 2,000 tweets, its wall time against the
budget and each fine-tuning cell's predicted vs measured cost (transferlab.planner)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from common import CACHE, Figure, config

BUDGET = "3m"
GRID = ("data=tweet_sentiment", "data.limit=2000", "compare.strategies=[linear_probe,finetune_full,lora]",
        "compare.train_sizes=[50,200,1000]", "compare.seeds=[0,1]", "trainer.enable_progress_bar=false")


def measure() -> list[Figure]:
    from transferlab.pipeline import run_grid
    from transferlab.planner import budget_seconds

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(*GRID, f"compare.budget={BUDGET}", f"paths.cache_dir={CACHE}")
        started = time.perf_counter()
        result = run_grid(cfg, Path(tmp) / "out")
        wall = time.perf_counter() - started
        plan = json.loads((Path(tmp) / "out" / "plan.json").read_text())
    tuned = [c for c in plan["cells"] if c["kind"] != "head" and c["measured_seconds"]]
    ratios = [max(c["measured_seconds"] / c["predicted_seconds"], c["predicted_seconds"] / c["measured_seconds"])
              for c in tuned]
    statuses = [c["status"] for c in plan["cells"]]
    cells = "; ".join(f"{c['cell']} {c['predicted_seconds']:.0f}/{c['measured_seconds']:.0f} s" for c in tuned)
    summary = ", ".join(f"{statuses.count(s)} {s}" for s in ("ran", "stopped", "skipped", "failed") if s in statuses)
    return [
        Figure(f"budgeted compare {BUDGET}, tweets 2000 (wall s)", wall, budget_seconds(BUDGET), "s",
               wall / budget_seconds(BUDGET), "<= 1.0x",
               f"{summary} of {len(statuses)} cells (linear_probe, finetune_full, lora x 50/200/1000 x 2 seeds); "
               f"verdict: {result['recommendation'][:160]}"),
        Figure("budget: fine-tuning cell predicted vs measured (worst ratio)", max(ratios, default=float("nan")), 1.0,
               "x", max(ratios, default=float("nan")), "<= 1.5x", f"predicted/measured: {cells}"),
    ]
