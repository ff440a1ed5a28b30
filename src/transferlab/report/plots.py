"""Learning curves and accuracy vs compute, as PNG bytes (embedded in the HTML report)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def learning_curves(summary: pd.DataFrame) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, rows in summary.groupby("strategy", sort=False):
        rows = rows.sort_values("train_size")
        ax.errorbar(rows["train_size"], 100 * rows["test_accuracy_mean"],
                    yerr=100 * rows["test_accuracy_std"].fillna(0), marker="o", capsize=3, label=strategy)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Learning curves (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The runs no other run beats on both accuracy and compute."""
    ordered = points.sort_values(["cost_seconds", "test_accuracy_mean"], ascending=[True, False])
    best, keep = -1.0, []
    for idx, row in ordered.iterrows():
        if row["test_accuracy_mean"] > best:
            keep.append(idx)
            best = row["test_accuracy_mean"]
    return ordered.loc[keep]


def accuracy_vs_compute(summary: pd.DataFrame, extraction_seconds: float) -> bytes:
    points = summary.assign(cost_seconds=summary["train_seconds_mean"]
                            + (summary["kind"] == "head") * extraction_seconds)
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, rows in points.groupby("strategy", sort=False):
        ax.scatter(rows["cost_seconds"], 100 * rows["test_accuracy_mean"], label=strategy)
        for r in rows.itertuples():
            ax.annotate(str(r.train_size), (r.cost_seconds, 100 * r.test_accuracy_mean), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    front = pareto_front(points)
    ax.plot(front["cost_seconds"], 100 * front["test_accuracy_mean"], "k--", lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("training seconds (head-only runs include the shared extraction)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs compute (labels: train size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
