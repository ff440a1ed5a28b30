"""report.md and a self-contained report.html (plots embedded) from the runs' metrics files."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from transferlab.atomic import atomic_path
from transferlab.report.plots import accuracy_vs_compute, learning_curves
from transferlab.report.recommend import crossover, recommendation, summarize, verdicts
from transferlab.report.tables import seed_table


def load_runs(metrics_files: list[Path]) -> pd.DataFrame:
    return pd.DataFrame([{**json.loads(p.read_text()), "metrics_file": str(p)} for p in metrics_files])


def _write(path: Path, text: str | bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(text) if isinstance(text, bytes) else tmp.write_text(text)


def learning_curve(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy: one row per train size, one column per strategy (what `dvc plots` draws)."""
    wide = summary.pivot(index="train_size", columns="strategy", values="test_accuracy_mean")
    return wide[list(dict.fromkeys(summary["strategy"]))].reset_index()


def summary_metrics(summary: pd.DataFrame, cross: int | None, extraction_seconds: float) -> dict:
    """Nested means per strategy and train size: the figures `dvc metrics show` / `dvc exp show` compare."""
    out: dict = {"crossover": cross, "extraction_seconds": round(extraction_seconds, 3)}
    for row in summary.itertuples():
        out.setdefault(row.strategy, {})[f"n{row.train_size}"] = {
            "test_accuracy": round(row.test_accuracy_mean, 4),
            "test_accuracy_std": None if pd.isna(row.test_accuracy_std) else round(row.test_accuracy_std, 4),
            "gap": round(row.gap_mean, 4), "train_seconds": round(row.train_seconds_mean, 2)}
    return out


def build_report(runs: pd.DataFrame, out_dir: Path, title: str, extraction_seconds: float = 0.0,
                 tie_margin: float = 0.005) -> dict:
    """Writes report.md, report.html, runs.csv, the two PNG plots, learning_curve.csv and
    summary.json; returns the verdict summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    found = verdicts(summary, extraction_seconds, tie_margin)
    cross = crossover(found)
    advice = recommendation(found)
    table = seed_table(summary, runs, extraction_seconds)
    plots = {"learning_curves.png": learning_curves(summary),
             "accuracy_vs_compute.png": accuracy_vs_compute(summary, extraction_seconds)}
    for name, png in plots.items():
        _write(out_dir / name, png)
    _write(out_dir / "runs.csv", runs.to_csv(index=False))
    _write(out_dir / "learning_curve.csv", learning_curve(summary).to_csv(index=False))
    _write(out_dir / "summary.json", json.dumps(summary_metrics(summary, cross, extraction_seconds), indent=2) + "\n")
    crossing = (f"Fine-tuning overtakes transfer learning from **{cross}** labels." if cross is not None
                else "Fine-tuning does not overtake transfer learning (beyond noise) in the measured range.")
    per_size = pd.DataFrame([{"train size": v.train_size, "best transfer": v.transfer,
                              "best fine-tune": v.finetune, "lead (points)": round(100 * v.lead, 2),
                              "noise (points)": round(100 * v.noise, 2), "verdict": v.winner,
                              "compute ratio": round(v.compute_ratio, 1)} for v in found])
    md = "\n\n".join([
        f"# {title}", "## Recommendation", advice, crossing,
        "## The comparison, measured", table.to_markdown(),
        "## Transfer vs fine-tuning at each train size", per_size.to_markdown(index=False),
        f"Feature extraction (once per backbone and data, shared by every head-only run): "
        f"{extraction_seconds:.1f} s.",
        "## Plots", "![learning curves](learning_curves.png)", "![accuracy vs compute](accuracy_vs_compute.png)",
        "## Runs", runs.drop(columns=["metrics_file"], errors="ignore").to_markdown(index=False),
    ]) + "\n"
    _write(out_dir / "report.md", md)
    images = "".join(f'<figure><img alt="{name[:-4]}" src="data:image/png;base64,'
                     f'{base64.b64encode(png).decode()}"></figure>' for name, png in plots.items())
    body = (f"<h1>{html.escape(title)}</h1><h2>Recommendation</h2><p id='recommendation'>{html.escape(advice)}</p>"
            f"<p id='crossover'>{html.escape(crossing.replace('**', ''))}</p>"
            f"<h2>The comparison, measured</h2>{table.to_html(table_id='seed-table')}"
            f"<h2>Transfer vs fine-tuning at each train size</h2>{per_size.to_html(index=False, table_id='verdicts')}"
            f"<p>Feature extraction, shared by every head-only run: {extraction_seconds:.1f} s.</p>"
            f"<h2>Plots</h2>{images}<h2>Runs</h2>"
            f"{runs.drop(columns=['metrics_file'], errors='ignore').to_html(index=False, table_id='runs')}")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px}"
             "img{max-width:48%;display:inline-block}figure{display:inline;margin:0}")
    _write(out_dir / "report.html", f"<!doctype html><html><head><meta charset='utf-8'><title>"
                                    f"{html.escape(title)}</title><style>{style}</style></head>"
                                    f"<body>{body}</body></html>\n")
    return {"crossover": cross, "recommendation": advice,
            "verdicts": [{**v.__dict__, "winner": v.winner} for v in found]}
