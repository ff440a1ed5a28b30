"""Apply the seed's criteria to measured runs: which strategy, for this data and this budget.

A difference counts only when it is larger than the seeds' spread (the standard deviation of the
difference of two means), than the test set's sampling error of that difference, and than
`tie_margin`; anything smaller is called a tie, not a win.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METRICS = ("test_accuracy", "test_macro_f1", "gap", "train_seconds", "peak_memory_mb")


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (strategy, train_size): mean and std over seeds of each metric."""
    runs = runs.assign(gap=runs["train_accuracy"] - runs["val_accuracy"])
    grouped = runs.groupby(["strategy", "kind", "train_size"])
    summary = grouped[list(METRICS)].agg(["mean", "std"])
    summary.columns = [f"{m}_{stat}" for m, stat in summary.columns]
    summary["seeds"] = grouped.size()
    summary["trainable_params"] = grouped["trainable_params"].first()
    if "test_size" in runs:
        summary["test_size"] = grouped["test_size"].first()
    summary["total_params"] = grouped["total_params"].first()
    return summary.reset_index()


@dataclass
class Verdict:
    train_size: int
    transfer: str  # best head-only strategy at this size
    finetune: str  # best fine-tuning strategy at this size
    lead: float  # finetune mean - transfer mean, in accuracy (0..1)
    noise: float  # what a difference must exceed to count
    compute_ratio: float  # finetune train seconds / transfer train seconds (+ amortised extraction)

    @property
    def winner(self) -> str:
        if abs(self.lead) <= self.noise:
            return "tie"
        return "finetune" if self.lead > 0 else "transfer"


def _best(rows: pd.DataFrame) -> pd.Series:
    return rows.loc[rows["test_accuracy_mean"].idxmax()]


def sampling_error(a: pd.Series, b: pd.Series) -> float:
    """Standard error of the difference of two accuracies on a test set of this size: what a single
    seed cannot show, and a lead must still exceed (0 when the size is unknown)."""
    n = a.get("test_size")
    if n is None or pd.isna(n) or n <= 0:
        return 0.0
    p, q = a["test_accuracy_mean"], b["test_accuracy_mean"]
    return float(np.sqrt((p * (1 - p) + q * (1 - q)) / n))


def verdicts(summary: pd.DataFrame, extraction_seconds: float = 0.0, tie_margin: float = 0.005) -> list[Verdict]:
    """The best transfer vs the best fine-tuning strategy at every train size both were run at."""
    out = []
    for size, rows in summary.groupby("train_size"):
        heads, tunes = rows[rows["kind"] == "head"], rows[rows["kind"] == "finetune"]
        if heads.empty or tunes.empty:
            continue
        tl, ft = _best(heads), _best(tunes)
        spread = float(np.sqrt(np.nansum([tl["test_accuracy_std"] ** 2, ft["test_accuracy_std"] ** 2])))
        spread = max(spread, sampling_error(tl, ft))
        cost_tl = tl["train_seconds_mean"] + extraction_seconds
        out.append(Verdict(int(size), tl["strategy"], ft["strategy"],
                           float(ft["test_accuracy_mean"] - tl["test_accuracy_mean"]), max(spread, tie_margin),
                           float(ft["train_seconds_mean"] / cost_tl) if cost_tl > 0 else float("inf")))
    return sorted(out, key=lambda v: v.train_size)


def crossover(found: list[Verdict]) -> int | None:
    """The smallest train size from which fine-tuning leads beyond noise at every larger size."""
    size = None
    for v in reversed(found):
        if v.winner != "finetune":
            break
        size = v.train_size
    return size


def _points(x: float) -> str:
    return f"{abs(x) * 100:.1f} points"


def _sentence(v: Verdict) -> str:
    ratio = f"{v.compute_ratio:.0f}x" if v.compute_ratio >= 10 else f"{v.compute_ratio:.1f}x"
    if v.winner == "tie":
        return (f"with {v.train_size} labels, {v.transfer} and {v.finetune} are tied "
                f"({v.finetune} {'+' if v.lead >= 0 else '-'}{_points(v.lead)}, within the noise (seeds' spread, test-set sampling error) of "
                f"{_points(v.noise)}), and {v.finetune} costs {ratio} the training compute")
    if v.winner == "finetune":
        return (f"with {v.train_size} labels, {v.finetune} leads {v.transfer} by {_points(v.lead)} "
                f"(beyond the spread of {_points(v.noise)}) at {ratio} the training compute")
    return (f"with {v.train_size} labels, {v.transfer} beats {v.finetune} by {_points(v.lead)} "
            f"(beyond the spread of {_points(v.noise)}), and {v.finetune} takes {ratio} the training compute")


def recommendation(found: list[Verdict]) -> str:
    """Plain words: what to use up to the crossover, what from it on, and why."""
    if not found:
        return "No train size has both a transfer-learning and a fine-tuning run to compare."
    cross = crossover(found)
    if cross is None:
        cost = ("and it costs less" if all(v.compute_ratio > 1 for v in found) else
                "and, with feature extraction counted in full, it costs about as much as fine-tuning here "
                "(extraction is paid once for every head trained on these features)")
        advice = ("Use transfer learning (a frozen backbone with a trained head): fine-tuning does not "
                  f"beat it beyond noise at any measured size, {cost}.")
    elif cross == found[0].train_size:
        advice = (f"Fine-tune: {found[0].finetune} leads at every measured size, from {cross} labels on.")
    else:
        advice = (f"Up to {max(v.train_size for v in found if v.train_size < cross)} labels use transfer "
                  f"learning; from {cross} labels on, fine-tuning leads beyond noise.")
    return advice + " Evidence: " + "; ".join(_sentence(v) for v in found) + "."
