"""What every benchmark shares: configs composed from conf/, the texts, a timer, the result line."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "benchmarks"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class Figure:
    name: str
    ours: float
    baseline: float
    unit: str
    ratio: float  # as the goal states it (ours/baseline or baseline/ours)
    goal: str
    note: str = ""

    @property
    def met(self) -> bool | None:
        if not self.goal:
            return None
        op, value = self.goal.split()
        return self.ratio >= float(value.rstrip("x")) if op == ">=" else self.ratio <= float(value.rstrip("x"))

    def line(self) -> str:
        verdict = {True: "met", False: "NOT met", None: "reported"}[self.met]
        return (f"{self.name}: {self.ratio:#.3g}x (ours {self.ours:.3g} {self.unit}, baseline {self.baseline:.3g} "
                f"{self.unit}; goal {self.goal or '-'}: {verdict}){' ' + self.note if self.note else ''}")


def config(*overrides: str):
    from transferlab.config import checked, compose

    return checked(compose(list(overrides)), "benchmark")


SETTLE_S = 1.0


def best_of(fns: list[Callable[[], object]], repeats: int = 2) -> list[tuple[float, object]]:
    """Fastest wall time of each function over `repeats` rounds, the functions taking turns within a
    round, so work elsewhere on the machine disturbs ours and the baseline alike.

    Each turn starts after a pause: the BLAS/OpenMP threads of the turn before (scikit-learn's or
    torch's) spin for a while after their last task, and on 2 cores they would take the next
    turn's cores (measured: our head fit 0.56-0.78 s right after scikit-learn, 0.47 s after 1 s)."""
    best: list[tuple[float, object]] = [(float("inf"), None)] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - started
            if elapsed < best[i][0]:
                best[i] = (elapsed, out)
    return best


def texts(source: str, n: int) -> list[str]:
    """The first n cleaned texts of a shipped data set, in a fixed shuffled order."""
    from transferlab.data import sources

    frame = sources.load(config(f"data={source}").data)
    return frame.sample(frac=1.0, random_state=0)["text"].head(n).tolist()


def prepared(*overrides: str):
    """A composed config and its prepared splits + cached features (under .cache/benchmarks), through
    the pipeline's prepare and extract steps, as every front end gets them."""
    from omegaconf import OmegaConf

    from transferlab import pipeline

    cfg = config(*overrides, f"paths.cache_dir={CACHE}")
    c = OmegaConf.to_container(cfg, resolve=True)
    data_dir = pipeline.prepare_step(c["data"], cfg.seed, str(CACHE))
    return cfg, Path(data_dir), Path(pipeline.extract_step(c["backbone"], c["extract"], data_dir, str(CACHE)))
