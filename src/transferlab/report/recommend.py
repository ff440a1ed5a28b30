"""From measured runs to a verdict a careful engineer can sign.

At each train size the candidate of each family (transfer learning: head strategies; fine-tuning:
the rest) is the strategy with the best mean *validation* accuracy over seeds: the test set only
judges the two chosen. Their lead is judged on the same test items: a paired bootstrap interval
(seeds, then items) and McNemar's exact test (`paired.py`). A win needs the interval to exclude 0
and the lead to reach `tie_margin`; anything else is a tie. The words follow from the per-size
verdicts alone, whatever their order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from transferlab.report.paired import PairedLead, paired_lead

FEW_VAL_LABELS = 100  # below this many validation labels, choosing between candidates is itself noisy
METRICS = ("test_accuracy", "test_macro_f1", "val_accuracy", "gap", "train_seconds", "peak_memory_mb",
           "cost_to_train_seconds", "inference_seconds_per_1k")


def with_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """The overfitting gap (train - test accuracy of the kept checkpoint: val chose it, so train -
    val would be biased low) and the cost ledger's columns (older runs: training seconds only)."""
    runs = runs.assign(gap=runs["train_accuracy"] - runs["test_accuracy"])
    runs = runs.assign(cost_to_train_seconds=runs.get("cost_to_train_seconds", runs["train_seconds"])
                       .fillna(runs["train_seconds"]))
    if "inference_seconds_per_1k" not in runs:
        runs = runs.assign(inference_seconds_per_1k=np.nan)
    return runs


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (strategy, train_size): mean and std over seeds of each metric."""
    runs = with_costs(runs)
    grouped = runs.groupby(["strategy", "kind", "train_size"])
    summary = grouped[list(METRICS)].agg(["mean", "std"])
    summary.columns = [f"{m}_{stat}" for m, stat in summary.columns]
    summary["seeds"] = grouped.size()
    for column in ("trainable_params", "total_params", "test_size", "val_size"):
        if column in runs:
            summary[column] = grouped[column].first()
    return summary.reset_index()


@dataclass
class Verdict:
    train_size: int
    transfer: str  # the head strategy with the best mean validation accuracy at this size
    finetune: str  # the fine-tuning strategy with the best mean validation accuracy
    candidates: dict[str, list[str]]  # family -> strategies considered
    paired: PairedLead  # finetune - transfer on the same test items
    tie_margin: float
    compute_ratio: float  # fine-tuning's cost to train / transfer's
    val_size: int | None = None

    @property
    def lead(self) -> float:
        return self.paired.lead

    @property
    def winner(self) -> str:
        if self.paired.low > 0 and reaches(self.lead, self.tie_margin):
            return "finetune"
        if self.paired.high < 0 and reaches(-self.lead, self.tie_margin):
            return "transfer"
        return "tie"

    @property
    def provisional(self) -> bool:
        """One seed: training-seed variance was not measured."""
        return self.paired.seeds < 2


def reaches(lead: float, margin: float) -> bool:
    """lead >= margin, a lead equal to the margin included: the lead is a mean of per-seed fractions,
    whose float sum can fall an ulp short of it (mean(2/1000, 18/1000) = 0.009999999999999998), which
    would call a lead of exactly the margin a tie."""
    return lead >= margin or math.isclose(lead, margin, rel_tol=1e-9, abs_tol=1e-12)


def family(kind: str) -> str:
    return "transfer" if kind == "head" else "finetune"


def chosen_on_validation(rows: pd.DataFrame) -> str:
    """The strategy with the best mean val accuracy (ties: the cheaper to train, then by name)."""
    means = rows.groupby("strategy").agg(val=("val_accuracy", "mean"), cost=("cost_to_train_seconds", "mean"))
    return means.sort_values(["val", "cost"], ascending=[False, True], kind="stable").index[0]


def correctness(runs: pd.DataFrame, strategy: str, seeds: list[int]) -> list[np.ndarray]:
    """Per seed, the strategy's per-item test correctness. Two runs of one seed at one size (two
    train sizes that resolved to the same rows) are refused: `loc` would hand back both runs'
    lists, read as one item each, and the lead would silently be 0."""
    rows = runs[runs["strategy"] == strategy].set_index("seed")
    if rows.index.duplicated().any():
        raise ValueError(f"{strategy} has several runs of seed {rows.index[rows.index.duplicated()][0]} at "
                         f"{rows['train_size'].iloc[0]} training rows: one run per strategy, size and seed")
    return [np.asarray(rows.loc[s, "test_correct"], dtype=bool) for s in seeds]


def verdicts(runs: pd.DataFrame, tie_margin: float = 0.005) -> list[Verdict]:
    """Transfer vs fine-tuning at every train size both families were run at, on the seeds both ran."""
    runs = with_costs(runs)
    out = []
    for size, rows in runs.groupby("train_size"):
        kinds = rows["kind"].map(family)
        heads, tunes = rows[kinds == "transfer"], rows[kinds == "finetune"]
        if heads.empty or tunes.empty:
            continue
        tl, ft = chosen_on_validation(heads), chosen_on_validation(tunes)
        seeds = sorted(set(rows.loc[rows["strategy"] == tl, "seed"]) & set(rows.loc[rows["strategy"] == ft, "seed"]))
        if not seeds:
            continue
        lead = paired_lead(correctness(rows, ft, seeds), correctness(rows, tl, seeds))
        cost = {s: rows.loc[rows["strategy"] == s, "cost_to_train_seconds"].mean() for s in (tl, ft)}
        known = rows["val_size"].dropna() if "val_size" in rows else ()  # runs from before val_size: unknown
        val_size = int(known.iloc[0]) if len(known) else None
        out.append(Verdict(int(size), tl, ft, {"transfer": sorted(heads["strategy"].unique()),
                                               "finetune": sorted(tunes["strategy"].unique())},
                           lead, tie_margin, float(cost[ft] / cost[tl]) if cost[tl] > 0 else float("inf"),
                           val_size))
    return sorted(out, key=lambda v: v.train_size)


def crossover(found: list[Verdict]) -> int | None:
    """The smallest train size from which fine-tuning wins at every larger measured size."""
    size = None
    for v in reversed(found):
        if v.winner != "finetune":
            break
        size = v.train_size
    return size


def _points(x: float) -> str:
    return f"{abs(x) * 100:.1f} points"


def _ratio(r: float) -> str:
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x"


def evidence(v: Verdict) -> str:
    """One size's verdict with its interval and p-value, in words; the lead's sign says whose it is
    (fine-tune minus transfer), which a bare "-3.4 points" beside "are tied" left to guess."""
    interval = (f"fine-tune lead {100 * v.lead:+.1f} points, 95% CI [{100 * v.paired.low:+.1f}, {100 * v.paired.high:+.1f}], "
                f"McNemar p={v.paired.p_value:.2g}")
    seeds = "1 seed, provisional" if v.provisional else f"{v.paired.seeds} seeds"
    if v.winner == "tie":
        claim = f"{v.transfer} and {v.finetune} are tied"
    elif v.winner == "finetune":
        claim = f"{v.finetune} beats {v.transfer}"
    else:
        claim = f"{v.transfer} beats {v.finetune}"
    return (f"with {v.train_size} labels {claim} ({interval}; {seeds}); {v.finetune} costs "
            f"{_ratio(v.compute_ratio)} {v.transfer}'s training")


def advice(v: Verdict) -> str:
    """What to use at this size: the winner; on a tie, the cheaper to train."""
    if v.winner == "finetune" or (v.winner == "tie" and v.compute_ratio < 1):
        return "fine-tune"
    return "transfer learning"


def _sizes(sizes: list[int]) -> str:
    return f"{sizes[0]} labels" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]} labels"


def _why(group: list[Verdict], use: str) -> str:
    winners = {v.winner for v in group}
    if winners == {"finetune" if use == "fine-tune" else "transfer"}:
        return "it wins beyond noise"
    if winners == {"tie"}:
        return "tied, and it costs less to train"
    return "it wins beyond noise or ties and costs less"


def recommendation(found: list[Verdict]) -> str:
    """Plain words: for each run of consecutive sizes with the same advice, what to use and why,
    then the evidence per size. Never more than the verdicts say."""
    if not found:
        return "No train size has both a transfer-learning and a fine-tuning run to compare."
    groups: list[list[Verdict]] = []
    for v in found:
        if groups and advice(groups[-1][-1]) == advice(v):
            groups[-1].append(v)
        else:
            groups.append([v])
    parts = [f"{_sizes([v.train_size for v in g])}: use {advice(g[0])} ({_why(g, advice(g[0]))})" for g in groups]
    text = "; ".join(parts) + "."
    if any(v.provisional for v in found):
        text += " With one seed, training-seed variance was not measured: the verdict is provisional."
    few = [v for v in found if v.val_size is not None and v.val_size < FEW_VAL_LABELS]
    if few:
        text += (f" Candidates were chosen on {few[0].val_size} validation labels at {few[0].train_size} labels"
                 f"{' (and as few at other sizes)' if len(few) > 1 else ''}: with so few the choice is noisy.")
    return text + " Evidence: " + "; ".join(evidence(v) for v in found) + "."
