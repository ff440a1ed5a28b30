"""The budget planner (compare.budget): which cells of a comparison fit in the time a user has.

Heads are nearly free once features exist, so every head cell runs first. Each fine-tuning
strategy's cost is then probed on this machine (a few optimiser steps at the data's own lengths)
and a cost model predicts every fine-tuning cell before it starts (once a strategy's cells have
run, the rate their fits measured replaces its probe's). Sizes go smallest first; at each size a
strategy whose validation accuracy trails the best beyond noise is not run at larger
ones (successive halving), and a (strategy, size) is run with all its seeds or not at all: seeds
are fixed up front, since adding seeds only where an interval straddles zero would bias the
verdict towards wins. Nothing starts that is predicted not to fit in what is left, and a fit is
stopped (Lightning's max_time) at twice its prediction or at its share of what is left, if sooner.
Every decision is written to plan.json.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from transferlab.atomic import write_json
from transferlab.errors import ConfigError

UNITS = {"s": 1, "m": 60, "h": 3600}
OVERRUN = 2.0  # a fit is stopped at this multiple of its predicted training time
REPORT_SECONDS = 5.0  # kept back for the report at the end (verdict bootstraps, plots: 2-4 s on 2 cores)
PLAN = "plan.json"


def budget_seconds(text: str | float | int) -> float:
    """compare.budget as seconds: "15m", "90s", "1h30m", or a number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif re.fullmatch(r"\s*\d+(\.\d+)?\s*", str(text)):
        seconds = float(text)
    else:
        parts = re.fullmatch(r"\s*((?:\d+(?:\.\d+)?\s*[smh]\s*)+)", str(text))
        if parts is None:
            raise ConfigError(f"compare.budget={text!r}: a duration such as 90s, 15m or 1h30m")
        seconds = sum(float(n) * UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([smh])", parts.group(1)))
    if seconds <= 0:
        raise ConfigError(f"compare.budget={text!r}: must be > 0")
    return seconds


@dataclass(frozen=True)
class StepRate:
    """What the probe measured for one fine-tuning strategy on this machine and data."""

    seconds_per_sample_step: float  # forward + backward + optimiser, per training item
    seconds_per_eval_item: float  # a forward pass, per validation or test item
    load_seconds: float  # building the model (backbone from disk): once to train, once to evaluate
    overhead_seconds: float = 0.0  # a fit's set-up outside its steps (Trainer, tokenising the splits)
    checkpoint_seconds: float = 0.0  # writing one validation's checkpoints (last.ckpt with optimizer state, best)


@dataclass(frozen=True)
class Shape:
    """What a cell's cost depends on, besides the machine: its rows and its training schedule."""

    train_rows: int
    val_rows: int
    test_rows: int
    epochs: int  # the most the fit may run (early stopping may end it sooner)
    validations: int


def predicted_seconds(rate: StepRate, shape: Shape) -> dict[str, float]:
    """(load, train, evaluate) seconds of a cell: an upper bound, as if no early stop came."""
    train = shape.epochs * shape.train_rows * rate.seconds_per_sample_step \
        + shape.validations * validation_seconds(rate, shape)
    return {"load": 2 * rate.load_seconds + rate.overhead_seconds, "train": train,
            "evaluate": shape.test_rows * rate.seconds_per_eval_item}


def validation_seconds(rate: StepRate, shape: Shape) -> float:
    """One validation inside a fit: its forward passes and the checkpoints written after it (~360 MB
    for MiniLM: 0.3-2 s on a 2-core VM, its disk writes vary, hence measured by the probe; with them,
    what a 50-label fit spends outside its steps)."""
    return shape.val_rows * rate.seconds_per_eval_item + rate.checkpoint_seconds


class CostModel(Protocol):
    def predict(self, strategy: str, train_size: int | float | str) -> dict[str, float]:
        """(load, train, evaluate) seconds of a fine-tuning cell."""

    def learn(self, strategy: str, train_size: int | float | str, run_dirs: list[Path]) -> None:
        """What these finished cells' fits measured, for the predictions after them."""

    def record(self) -> dict:
        """The rates behind the predictions, for plan.json."""


@dataclass
class Entry:
    cell: str
    strategy: str
    train_size: int | float | str
    seed: int
    kind: str
    status: str = "planned"  # ran | stopped (max_time) | skipped | failed
    reason: str = ""
    predicted_seconds: float | None = None
    measured_seconds: float | None = None
    max_train_seconds: float | None = None  # its fit's max_time
    limited_by: str = ""  # what set max_train_seconds (train_limit)


@dataclass
class Plan:
    """The budget, the clock, and every cell's entry: what ran, what was skipped and why."""

    budget_seconds: float
    clock: Callable[[], float] = time.monotonic
    entries: list[Entry] = field(default_factory=list)
    rates: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def left(self) -> float:
        return self.budget_seconds - (self.clock() - self.started)

    def entry(self, cell: str) -> Entry:
        return next(e for e in self.entries if e.cell == cell)

    def record(self) -> dict:
        spent = self.clock() - self.started
        return {"budget_seconds": self.budget_seconds, "spent_seconds": round(spent, 3),
                "rates": self.rates, "cells": [asdict(e) for e in self.entries]}

    def write(self, out_dir: Path) -> dict:
        """plan.json now; the record written."""
        record = self.record()
        write_json(Path(out_dir) / PLAN, record)
        return record


def fits(plan: Plan, predicted: list[float]) -> bool:
    return sum(predicted) <= plan.left() - REPORT_SECONDS


def size_order(sizes: list) -> list:
    """Train sizes smallest first; "all" last (fractions and counts are compared by the caller's rows)."""
    return sorted(sizes, key=lambda s: math.inf if s == "all" else float(s))


def trails_beyond_noise(best: float, other: float, val_rows: int, z: float = 1.96) -> bool:
    """The other strategy's validation accuracy is below the best's by more than a 95% two-sample
    binomial margin on `val_rows` items (each mean over the same seeds)."""
    p = min(max(best, 1.0 / (val_rows + 1)), 1 - 1.0 / (val_rows + 1))
    return best - other > z * math.sqrt(2 * p * (1 - p) / val_rows)


def survivors(val_accuracy: dict[str, float], val_rows: int) -> list[str]:
    """The strategies not beaten beyond noise on validation at this size: the next size runs only them."""
    if not val_accuracy:
        return []
    best = max(val_accuracy.values())
    return [s for s, acc in val_accuracy.items() if not trails_beyond_noise(best, acc, val_rows)]


def train_limit(predicted_train: float, each: float, cells: int, left: float) -> tuple[int, str]:
    """How long each fit of a group that fits may train (Lightning's max_time), and what sets it:
    OVERRUN x its predicted training, or, when that comes later, its even share of what is left
    (less its predicted load and evaluation), so that a group slower than predicted stops at the
    budget's end instead of overrunning it. `fits` made sure the share is at least the prediction."""
    overrun = OVERRUN * predicted_train
    share = (left - REPORT_SECONDS) / cells - (each - predicted_train)
    whole = max(1, math.floor(min(overrun, share)))  # max_time counts whole seconds
    return whole, (f"{OVERRUN:g}x its predicted training time" if overrun <= share
                   else "its share of what was left of the budget")


def max_time(seconds: int) -> str:
    """Lightning's max_time ("DD:HH:MM:SS") for a fit of `seconds`."""
    return f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
