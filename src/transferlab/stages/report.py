"""Stage `report`: the comparison's runs (the `compare` matrix) -> report.md/html, summary metrics
(`dvc metrics show`) and the learning curve (`dvc plots show`)."""

from __future__ import annotations

from itertools import product
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import DataError
from transferlab.report.render import build_report, load_runs
from transferlab.stages import artifact_dirs, extract, prepare
from transferlab.stages.compare import run_name, sized


def run(cfg: DictConfig, runs_dir: str | Path, out_dir: str | Path) -> dict:
    """Reads exactly the runs that compare.* names (stale runs of an earlier grid are left out)."""
    grid = list(product(cfg.compare.strategies, cfg.compare.train_sizes, cfg.compare.seeds))
    files = [Path(runs_dir) / run_name(*cell) / "metrics.json" for cell in grid]
    missing = [str(f.parent) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: no metrics.json; run the compare stages first (dvc repro)")
    runs = load_runs(files)
    extraction = amortised_extraction(cfg) if (runs["kind"] == "head").any() else 0.0
    return build_report(runs, Path(out_dir), f"transferlab: {cfg.data.name} on {cfg.backbone.name}",
                        extraction, cfg.compare.tie_margin)


def amortised_extraction(cfg: DictConfig) -> float:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    cache_root = Path(cfg.paths.cache_dir)
    data_dirs = [prepare.cached(OmegaConf.create(sized(data, size)), seed, cache_root)
                 for size, seed in product(cfg.compare.train_sizes, cfg.compare.seeds)]
    return extract.amortised_seconds(cfg.backbone, cfg.extract, data_dirs, cache_root / "features")


def dvc_main(cfg: DictConfig) -> None:
    dirs = artifact_dirs(cfg)
    print(run(cfg, dirs["compare"], dirs["report"])["recommendation"])
