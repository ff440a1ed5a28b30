"""After a Hydra multirun: one table of every run's headline metrics, and where they are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

COLUMNS = ("strategy", "train_size", "test_accuracy", "test_macro_f1", "train_accuracy",
           "val_accuracy", "trainable_params", "train_seconds", "peak_memory_mb")


def runs_table(sweep_dir: Path) -> Table | None:
    paths = sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: p.parent.name)
    if not paths:
        return None
    table = Table(title=f"runs in {sweep_dir}")
    for column in ("run", *COLUMNS):
        table.add_column(column, justify="left" if column in ("run", "strategy") else "right")
    for path in paths:
        metrics = json.loads(path.read_text())
        cells = [f"{metrics.get(c):.3f}" if isinstance(metrics.get(c), float) else str(metrics.get(c, ""))
                 for c in COLUMNS]
        table.add_row(path.parent.name, *cells)
    return table


class RunsSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table = runs_table(Path(config.hydra.sweep.dir))
        if table is not None:
            Console().print(table)
