"""Stage `report`: a comparison's runs -> report.md/html, summary metrics (`dvc metrics show`) and
the learning curve (`dvc plots show`)."""

from __future__ import annotations

from pathlib import Path

from transferlab.errors import DataError
from transferlab.report.render import build_report, load_runs


def run(metrics_files: list[Path], out_dir: str | Path, title: str, extraction_seconds: float,
        tie_margin: float, plan: dict | None = None) -> dict:
    """Reads exactly the runs it is given (stale runs of an earlier grid are left out)."""
    missing = [str(f.parent) for f in metrics_files if not Path(f).is_file()]
    if missing:
        raise DataError(f"{missing[0]}: no metrics.json; run the compare stages first (dvc repro)")
    return build_report(load_runs(metrics_files), Path(out_dir), title, extraction_seconds, tie_margin, plan)
