"""After a Hydra multirun: one table of every run's headline metrics, and where they are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table


def _count(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


COLUMNS: dict[str, Callable[[dict], str]] = {  # header -> cell, narrow enough for 80 columns; gap = train acc - test acc
    "strategy": lambda m: m["strategy"],
    "n train": lambda m: str(m["train_size"]),
    "test acc": lambda m: f"{m['test_accuracy']:.3f}",
    "macro F1": lambda m: f"{m['test_macro_f1']:.3f}",
    "val acc": lambda m: f"{m['val_accuracy']:.3f}",
    "gap": lambda m: f"{m['train_accuracy'] - m['test_accuracy']:+.2f}",
    "params": lambda m: _count(m["trainable_params"]),
    "train s": lambda m: f"{m['train_seconds']:.1f}",
    "peak MB": lambda m: f"{m['peak_memory_mb']:.0f}",
}


def runs_table(sweep_dir: Path) -> Table | None:
    paths = sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: p.parent.name)
    if not paths:
        return None
    table = Table(title=f"runs in {sweep_dir} (one folder per run)", caption="gap: train - test accuracy; params: trainable parameters")
    table.add_column("run")
    for header in COLUMNS:
        table.add_column(header, justify="left" if header == "strategy" else "right",
                         no_wrap=header == "strategy")
    for path in paths:
        metrics = json.loads(path.read_text())
        table.add_row(path.parent.name, *(cell(metrics) for cell in COLUMNS.values()))
    return table


class RunsSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table = runs_table(Path(config.hydra.sweep.dir))
        if table is not None:
            console = Console()
            if not console.is_terminal:  # a pipe or a log (80 columns): as wide as the table, not cut to "0.9…"
                wide = console.measure(table, options=console.options.update_width(1000))
                console.width = max(console.width, wide.maximum)
            console.print(table)
