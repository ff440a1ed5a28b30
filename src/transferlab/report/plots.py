"""Learning curves and accuracy vs compute as matplotlib Figures (PNG in the HTML report).

Figures are built without pyplot: no backend is chosen for the user's process (a notebook keeps its
own), and report threads never share pyplot's global state."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


class ShownFigure(Figure):
    """A Figure that Jupyter shows as a PNG. IPython's matplotlib formatter is registered only when
    pyplot loads its inline backend, which these figures never do: without this, a notebook's
    `cmp.plot()["learning_curves"]` showed only '<Figure size 600x400 with 1 Axes>'."""

    def _repr_png_(self) -> bytes:
        return png(self)


def mean_interval(std: pd.Series, seeds: pd.Series, level: float = 0.95) -> pd.Series:
    """Half-width of the t interval of a mean over seeds (0 with one seed: nothing measured)."""
    half = stats.t.ppf(0.5 + level / 2, (seeds - 1).clip(lower=1)) * std / np.sqrt(seeds)
    return half.where(seeds > 1, 0.0).fillna(0.0)


def learning_curves(summary: pd.DataFrame, curves: dict | None = None) -> Figure:
    """Mean test accuracy per size with its 95% interval over seeds as a band; a fitted saturating
    power law (report/forecast.py) dashed beyond the largest measured size, to 4x, with its 80% band."""
    fig = ShownFigure(figsize=(6, 4))
    ax = fig.subplots()
    for strategy, rows in summary.groupby("strategy", sort=False):
        rows = rows.sort_values("train_size")
        half = mean_interval(rows["test_accuracy_std"], rows["seeds"])
        mean = 100 * rows["test_accuracy_mean"]
        (line,) = ax.plot(rows["train_size"], mean, marker="o", label=strategy)
        ax.fill_between(rows["train_size"], mean - 100 * half, mean + 100 * half, color=line.get_color(), alpha=0.15)
        curve = (curves or {}).get(strategy)
        if curve is not None:
            n = np.geomspace(rows["train_size"].max(), 4 * rows["train_size"].max(), 50)
            low, high = curve.band(n)
            ax.plot(n, 100 * curve.predict(n), "--", color=line.get_color(), lw=1)
            ax.fill_between(n, 100 * low, 100 * high, color=line.get_color(), alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Learning curves (mean, 95% CI over seeds; dashed: forecast)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The runs no other run beats on both accuracy and compute."""
    ordered = points.sort_values(["cost_seconds", "test_accuracy_mean"], ascending=[True, False])
    best, keep = -1.0, []
    for idx, row in ordered.iterrows():
        if row["test_accuracy_mean"] > best:
            keep.append(idx)
            best = row["test_accuracy_mean"]
    return ordered.loc[keep]


def accuracy_vs_compute(summary: pd.DataFrame) -> Figure:
    points = summary.assign(cost_seconds=summary["cost_to_train_seconds_mean"])
    fig = ShownFigure(figsize=(6, 4))
    ax = fig.subplots()
    for strategy, rows in points.groupby("strategy", sort=False):
        ax.scatter(rows["cost_seconds"], 100 * rows["test_accuracy_mean"], label=strategy)
        for r in rows.itertuples():
            ax.annotate(str(r.train_size), (r.cost_seconds, 100 * r.test_accuracy_mean), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    front = pareto_front(points)
    ax.plot(front["cost_seconds"], 100 * front["test_accuracy_mean"], "k--", lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("cost to train, s (training + extraction of the items it trains and validates on)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs compute (labels: train size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
