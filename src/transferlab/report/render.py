"""report.md and a self-contained report.html (plots embedded) from the runs' metrics files."""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from transferlab.atomic import atomic_path
from transferlab.report.forecast import MIN_SIZES, describe, fit_curve, forecast_crossover
from transferlab.report.plots import accuracy_vs_compute, learning_curves, png
from transferlab.report.recommend import Verdict, crossover, recommendation, summarize, verdicts
from transferlab.report.tables import seed_table


def test_correctness(metrics_file: Path) -> list[bool]:
    """Per test item, in the test split's order, whether the run got it right (its predictions.csv).
    Label names are read verbatim: pandas would read a class named "None", "NA" or "null" as NaN,
    and NaN != NaN would score every correct prediction of that class as wrong."""
    table = pd.read_csv(metrics_file.parent / "predictions.csv", usecols=["actual", "predicted"], dtype=str,
                        keep_default_na=False)
    return (table["actual"] == table["predicted"]).tolist()


def load_runs(metrics_files: list[Path]) -> pd.DataFrame:
    return pd.DataFrame([{**json.loads(p.read_text()), "metrics_file": str(p), "test_correct": test_correctness(p)}
                         for p in map(Path, metrics_files)])


def forecasts(runs: pd.DataFrame, found: list[Verdict]) -> tuple[dict, str | None]:
    """Saturating power-law curves of the two families' candidates at the largest size (>= 4 sizes),
    and, when no crossover was observed, the forecast one up to 4x the largest size."""
    if not found:
        return {}, None
    last = found[-1]
    curves = {}
    for strategy in dict.fromkeys([last.transfer, last.finetune]):
        rows = runs[runs["strategy"] == strategy]
        curve = fit_curve(rows["train_size"].to_numpy(float), rows["test_accuracy"].to_numpy(float))
        if curve is not None:
            curves[strategy] = curve
    if len(curves) < 2:
        return curves, None
    if crossover(found) is not None or last.winner == "finetune":
        return curves, None
    start, stop = last.train_size, 4 * last.train_size
    return curves, describe(forecast_crossover(curves[last.transfer], curves[last.finetune], start, stop), start, stop)


def _write(path: Path, text: str | bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(text) if isinstance(text, bytes) else tmp.write_text(text)


def learning_curve(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy: one row per train size, one column per strategy (what `dvc plots` draws)."""
    wide = summary.pivot(index="train_size", columns="strategy", values="test_accuracy_mean")
    return wide[list(dict.fromkeys(summary["strategy"]))].reset_index()


def verdict_record(v: Verdict) -> dict:
    """One size's verdict as summary.json and build_report's result carry it."""
    p = v.paired
    return {"train_size": v.train_size, "transfer": v.transfer, "finetune": v.finetune, "candidates": v.candidates,
            "winner": v.winner, "lead": round(v.lead, 4), "ci_low": round(p.low, 4), "ci_high": round(p.high, 4),
            "ci_level": p.level, "p_value": round(p.p_value, 6), "per_seed_p": [round(x, 6) for x in p.per_seed_p],
            "discordant": list(p.discordant), "seeds": p.seeds, "test_items": p.items,
            "provisional": v.provisional, "val_size": v.val_size, "compute_ratio": round(v.compute_ratio, 3)}


def summary_metrics(summary: pd.DataFrame, found: list[Verdict], extraction_seconds: float,
                    forecast: str | None) -> dict:
    """Nested means per strategy and train size, and the verdicts with their intervals: the figures
    `dvc metrics show` / `dvc exp show` compare."""
    out: dict = {"crossover": crossover(found), "extraction_seconds": round(extraction_seconds, 3),
                 "forecast": forecast, "verdicts": {f"n{v.train_size}": verdict_record(v) for v in found}}
    for row in summary.itertuples():
        out.setdefault(row.strategy, {})[f"n{row.train_size}"] = {
            "test_accuracy": round(row.test_accuracy_mean, 4),
            "test_accuracy_std": None if pd.isna(row.test_accuracy_std) else round(row.test_accuracy_std, 4),
            "val_accuracy": round(row.val_accuracy_mean, 4),
            "gap": round(row.gap_mean, 4), "train_seconds": round(row.train_seconds_mean, 2),
            "cost_to_train_seconds": round(row.cost_to_train_seconds_mean, 2),
            "inference_seconds_per_1k": None if pd.isna(row.inference_seconds_per_1k_mean)
            else round(row.inference_seconds_per_1k_mean, 3)}
    return out


def per_size_table(found: list[Verdict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "train size": v.train_size, "val labels": v.val_size,
        "candidates (chosen on val)": f"transfer: {', '.join(v.candidates['transfer'])}; "
                                      f"fine-tune: {', '.join(v.candidates['finetune'])}",
        "transfer": v.transfer, "fine-tune": v.finetune,
        "fine-tune lead (points), 95% CI": f"{100 * v.lead:+.1f} [{100 * v.paired.low:+.1f}, {100 * v.paired.high:+.1f}]",
        "McNemar p": f"{v.paired.p_value:.2g}", "seeds": v.paired.seeds, "verdict": v.winner,
        "compute ratio": round(v.compute_ratio, 1)} for v in found])


def cost_ledger(summary: pd.DataFrame) -> pd.DataFrame:
    """Every strategy's costs measured alike, at each size (means over seeds)."""
    return pd.DataFrame([{
        "strategy": r.strategy, "train size": r.train_size,
        "cost to train (s)": round(r.cost_to_train_seconds_mean, 1), "of which training (s)": round(r.train_seconds_mean, 1),
        "cost to label 1M items (s)": None if pd.isna(r.inference_seconds_per_1k_mean)
        else round(1000 * r.inference_seconds_per_1k_mean, 0),
        "peak memory (MB)": round(r.peak_memory_mb_mean, 0)} for r in summary.itertuples()])


def figures(summary: pd.DataFrame, curves: dict) -> dict[str, Figure]:
    """The report's plots by name: learning curves with their forecast, accuracy vs compute."""
    return {"learning_curves": learning_curves(summary, curves), "accuracy_vs_compute": accuracy_vs_compute(summary)}


def budget_table(plan: dict) -> pd.DataFrame:
    """plan.json's cells: what ran, was stopped or skipped and why, predicted vs measured cost."""
    return pd.DataFrame([{"cell": c["cell"], "status": c["status"], "why": c["reason"],
                          "predicted (s)": c["predicted_seconds"], "measured (s)": c["measured_seconds"]}
                         for c in plan["cells"]]).fillna("-")  # heads are not predicted; skipped cells not measured


def budget_note(plan: dict) -> str:
    statuses = [c["status"] for c in plan["cells"]]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("ran", "stopped", "skipped", "failed") if s in statuses)
    return (f"Budget {plan['budget_seconds']:.0f} s, spent {plan['spent_seconds']:.0f} s: {counts}. Heads ran first "
            "at every size; fine-tuning smallest size first, each (strategy, size) with all its seeds or not at "
            "all, a strategy beaten on validation beyond noise not run at larger sizes, a fit stopped at twice "
            "its predicted time or at its share of what was left, whichever came first. The Recommendation says "
            "what the budget did not buy.")


def not_bought(plan: dict, runs: pd.DataFrame) -> str:
    """Which fine-tuning strategies the budget bought at which sizes not, what transfer learning
    measured where no fine-tuning ran, and each skipped strategy's forecast there (its learning
    curve, marked as a forecast), or why there is none. Empty when every fine-tuning cell ran."""
    skipped = [c for c in plan["cells"] if c["kind"] != "head" and c["status"] == "skipped"]
    if not skipped:
        return ""
    rows = {Path(f).parent.name: n for f, n in zip(runs["metrics_file"], runs["train_size"])}  # cell -> rows

    def size(label) -> int | None:
        return next((n for cell, n in rows.items() if f"-n{label}-s" in cell), None)

    def named(label) -> str:
        return f"all ({size(label)})" if str(label) == "all" and size(label) else str(label)

    missing = {s: list(dict.fromkeys(c["train_size"] for c in skipped if c["strategy"] == s))
               for s in dict.fromkeys(c["strategy"] for c in skipped)}
    parts = ["Not bought by the budget: " + "; ".join(
        f"{s} at {', '.join(map(named, labels))} labels" for s, labels in missing.items()) + "."]
    tuned = set(runs.loc[runs["kind"] != "head", "train_size"])
    means = runs[runs["kind"] == "head"].groupby(["strategy", "train_size"])["test_accuracy"].mean()
    bare = [n for n in dict.fromkeys(size(c["train_size"]) for c in skipped) if n is not None and n not in tuned]
    measured = [f"{h} {100 * acc:.1f}% at {n}" for (h, n), acc in means.items() if n in bare]
    if measured:
        parts.append(f"Where no fine-tuning ran, transfer learning measured: {', '.join(measured)}.")
    for strategy, labels in missing.items():
        own = runs[runs["strategy"] == strategy]
        curve = fit_curve(own["train_size"].to_numpy(float), own["test_accuracy"].to_numpy(float))
        targets = [n for n in map(size, labels) if n is not None]
        if curve is None:
            sizes = own["train_size"].nunique()
            parts.append(f"{strategy}: no forecast (measured at {sizes} size{'' if sizes == 1 else 's'}; a "
                         f"learning curve needs {MIN_SIZES}).")
            continue
        low, high = curve.band(targets)
        parts.append(f"{strategy} forecast (not measured): " + ", ".join(
            f"{100 * float(curve.predict(n)):.1f}% at {n} (80% band {100 * lo:.1f}-{100 * hi:.1f})"
            for n, lo, hi in zip(targets, low, high)) + ".")
    return " ".join(parts)


def cut_short(plan: dict) -> str:
    """The fine-tuning cells the budget stopped (max_time) before their schedule ended: the verdict
    at their size judges a shortened fit, which can understate fine-tuning, and says so beside the
    advice rather than only in the Budget table. Empty when none was stopped."""
    stopped = Counter((c["strategy"], c["train_size"]) for c in plan["cells"]
                      if c["kind"] != "head" and c["status"] == "stopped")
    if not stopped:
        return ""
    planned = Counter((c["strategy"], c["train_size"]) for c in plan["cells"])
    named = "; ".join(f"{s} at {n} labels ({k} of {planned[s, n]} seeds)" for (s, n), k in stopped.items())
    return (f"Stopped by the budget before their training schedule ended: {named}. A verdict at those sizes "
            "judges a shortened fine-tune and may understate fine-tuning.")


def build_report(runs: pd.DataFrame, out_dir: Path, title: str, extraction_seconds: float = 0.0,
                 tie_margin: float = 0.005, plan: dict | None = None) -> dict:
    """Writes report.md, report.html, runs.csv, the two PNG plots, learning_curve.csv and
    summary.json; returns the verdict summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    found = verdicts(runs, tie_margin)
    cross = crossover(found)
    curves, forecast = forecasts(runs, found)
    advice = recommendation(found) + (f" Forecast: {forecast}." if forecast else "")
    table = seed_table(summary, runs, extraction_seconds)
    plots = {f"{name}.png": png(fig) for name, fig in figures(summary, curves).items()}
    for name, image in plots.items():
        _write(out_dir / name, image)
    runs = runs.drop(columns=["test_correct"])
    _write(out_dir / "runs.csv", runs.to_csv(index=False))
    _write(out_dir / "learning_curve.csv", learning_curve(summary).to_csv(index=False))
    _write(out_dir / "summary.json", json.dumps(summary_metrics(summary, found, extraction_seconds, forecast), indent=2) + "\n")
    crossing = (f"Fine-tuning wins beyond noise from **{cross}** labels on." if cross is not None
                else "No measured size from which fine-tuning wins at every larger one: see the advice per size.")
    per_size = per_size_table(found)
    ledger = cost_ledger(summary)
    unbought = " ".join(filter(None, (not_bought(plan, runs), cut_short(plan)))) if plan else ""
    md = "\n\n".join([
        f"# {title}", "## Recommendation", advice, crossing, *([unbought] if unbought else []),
        "## The comparison, measured", table.to_markdown(),
        "## Transfer vs fine-tuning at each train size", VERDICT_RULE, per_size.to_markdown(index=False),
        "## Cost ledger", LEDGER_NOTE, ledger.to_markdown(index=False),
        f"Feature extraction of every distinct input of this grid once: {extraction_seconds:.1f} s.",
        *(["## Budget", budget_note(plan), budget_table(plan).to_markdown(index=False)] if plan else []),
        "## Plots", "![learning curves](learning_curves.png)", "![accuracy vs compute](accuracy_vs_compute.png)",
        "## Runs", runs.drop(columns=["metrics_file"], errors="ignore").to_markdown(index=False),
    ]) + "\n"
    _write(out_dir / "report.md", md)
    images = "".join(f'<figure><img alt="{name[:-4]}" src="data:image/png;base64,'
                     f'{base64.b64encode(image).decode()}"></figure>' for name, image in plots.items())
    body = (f"<h1>{html.escape(title)}</h1><h2>Recommendation</h2><p id='recommendation'>{html.escape(advice)}</p>"
            f"<p id='crossover'>{html.escape(crossing.replace('**', ''))}</p>"
            + (f"<p id='not-bought'>{html.escape(unbought)}</p>" if unbought else "") +
            f"<h2>The comparison, measured</h2>{table.to_html(table_id='seed-table')}"
            f"<h2>Transfer vs fine-tuning at each train size</h2><p>{html.escape(VERDICT_RULE)}</p>"
            f"{per_size.to_html(index=False, table_id='verdicts')}"
            f"<h2>Cost ledger</h2><p>{html.escape(LEDGER_NOTE)}</p>{ledger.to_html(index=False, table_id='ledger')}"
            f"<p>Feature extraction of every distinct input of this grid once: {extraction_seconds:.1f} s.</p>"
            + (f"<h2>Budget</h2><p>{html.escape(budget_note(plan))}</p>"
               f"{budget_table(plan).to_html(index=False, table_id='budget')}" if plan else "")
            + f"<h2>Plots</h2>{images}<h2>Runs</h2>"
            f"{runs.drop(columns=['metrics_file'], errors='ignore').to_html(index=False, table_id='runs')}")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px}"
             "img{max-width:48%;display:inline-block}figure{display:inline;margin:0}")
    _write(out_dir / "report.html", f"<!doctype html><html><head><meta charset='utf-8'><title>"
                                    f"{html.escape(title)}</title><style>{style}</style></head>"
                                    f"<body>{body}</body></html>\n")
    return {"crossover": cross, "recommendation": advice, "forecast": forecast, "not_bought": unbought,
            "verdicts": [verdict_record(v) for v in found]}


VERDICT_RULE = ("Each family's candidate is the strategy with the best mean validation accuracy; the test set "
                "only judges the two chosen, on the same test items. The lead is the fine-tuning candidate's test "
                "accuracy minus transfer's (negative: transfer learning ahead); its 95% interval is a paired "
                "bootstrap (seeds, then items); a win needs it to exclude 0 and the lead to reach the tie "
                "margin, else it is a tie. McNemar's exact p (discordant items summed over seeds) is shown beside it. "
                "With 2-3 seeds the interval is optimistic about seed-to-seed variation.")
LEDGER_NOTE = ("Cost to train: loading the backbone (for extraction and/or fine-tuning), extracting the "
               "features of the items it trains and validates on (strategies that use cached features) at "
               "the rate this backbone measured on this data set, and training (LP-FT: probe and "
               "fine-tuning, every attempt). Cost to label 1M items: inference at the measured test-set "
               "rate (heads: extraction plus the head). Test-set evaluation is nobody's training cost.")
