"""The seed's comparison table, one column per strategy, with the measured values."""

from __future__ import annotations

import pandas as pd


def _pm(mean: float, std: float, scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± std' (std left out for a single seed)."""
    if pd.isna(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def seed_table(summary: pd.DataFrame, runs: pd.DataFrame, extraction_seconds: float) -> pd.DataFrame:
    """Rows: the seed's criteria; columns: strategies; cells: measured (mean ± std over seeds)."""
    largest = summary["train_size"].max()
    columns = {}
    for strategy, rows in summary.groupby("strategy", sort=False):
        rows = rows.sort_values("train_size")
        top = rows[rows["train_size"] == rows["train_size"].max()].iloc[0]
        groups = runs.loc[runs["strategy"] == strategy, "trained_groups"].iloc[0] \
            if "trained_groups" in runs else ""
        head_only = top["kind"] == "head"
        col = {
            "training layers": f"{groups or 'head only'}; {_params(top['trainable_params'])} trainable "
                               f"({100 * top['trainable_params'] / top['total_params']:.2f}% of "
                               f"{_params(top['total_params'])})",
            "data requirement (test accuracy % by train size)": ", ".join(
                f"{int(r.train_size)}: {_pm(r.test_accuracy_mean, r.test_accuracy_std)}" for r in rows.itertuples()),
            # at each strategy's own largest size, named in the cell: under a budget the heads ran
            # at sizes fine-tuning did not, and costs at different sizes must not read as one row's
            "computational cost at its largest size (cost to train s; peak MB)": (
                f"{int(top['train_size'])}: {top['cost_to_train_seconds_mean']:.1f} s (training "
                f"{top['train_seconds_mean']:.1f} s" + (", the rest extraction" if head_only else "")
                + f"); {top['peak_memory_mb_mean']:.0f} MB"),
            "adaptability at its largest size (test accuracy %; macro-F1 %)": (
                f"{int(top['train_size'])}: {_pm(top['test_accuracy_mean'], top['test_accuracy_std'])}; "
                f"{_pm(top['test_macro_f1_mean'], top['test_macro_f1_std'])}"),
            "risk of overfitting (train − test accuracy, points)": ", ".join(
                f"{int(r.train_size)}: {_pm(r.gap_mean, r.gap_std)}" for r in rows.itertuples()),
        }
        columns[strategy] = col
    table = pd.DataFrame(columns)
    table.index.name = f"criterion (largest size: {int(largest)})"
    return table
