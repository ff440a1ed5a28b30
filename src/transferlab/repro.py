"""dvc.yaml's stages: the fixed artifact paths `dvc repro` gives each stage, in one place.

`transferlab <stage>` (see cli.py) calls the function of the same name here. prepare -> extract
-> train -> evaluate are dvc.yaml's single run, one stage each (dvc.yaml is their sequence);
`compare` is one cell of the matrix through `transferlab.pipeline.run_cell`, `report` the report
over the matrix's cells. Stage code is imported inside each function, so a stage's code
dependencies are its own module's import closure (`STAGE_MODULES`; tests/test_provenance.py
checks dvc.yaml's deps against it)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

STAGES = ("prepare", "extract", "train", "evaluate", "compare", "report")
CONF = Path("conf")  # dvc runs in the repository: its conf/, as `dvc exp run` composes it
STAGE_MODULES = {"prepare": "transferlab.stages.prepare", "extract": "transferlab.stages.extract",
                 "train": "transferlab.stages.train", "evaluate": "transferlab.stages.evaluate",
                 "compare": "transferlab.pipeline", "report": "transferlab.pipeline"}


def artifact_dirs(cfg: DictConfig) -> dict[str, Path]:
    """The fixed layout `dvc repro` uses (flows use Hydra's run dir and the content-addressed cache)."""
    root = Path(cfg.paths.artifacts_dir)
    return {name: root / name for name in ("data", "features", "model", "eval", "compare", "report")}


def features_entry(cfg: DictConfig) -> Path | None:
    """The extract stage's entry for artifacts/data, when the strategy trains on features."""
    from transferlab.features import FeatureCache
    from transferlab.stages.extract import cache_key
    from transferlab.strategy import resolve

    dirs = artifact_dirs(cfg)
    if not resolve(cfg).needs_features:
        return None
    return FeatureCache(dirs["features"]).entry(cache_key(cfg.backbone, cfg.extract, dirs["data"]))


def prepare(cfg: DictConfig) -> None:
    from transferlab.stages import prepare as stage

    stage.run(cfg.data, cfg.seed, artifact_dirs(cfg)["data"])


def extract(cfg: DictConfig) -> None:
    """Embeds through the item store under paths.cache_dir, the one the comparison's cells embed
    through, so a `dvc repro` embeds each input once; the entry is then copied into the output."""
    from transferlab.features import FeatureCache
    from transferlab.stages import extract as stage

    dirs, shared = artifact_dirs(cfg), stage.features_root(cfg.paths.cache_dir)
    entry = stage.run(cfg.backbone, cfg.extract, dirs["data"], shared, cfg.trainer.enable_progress_bar)
    FeatureCache(shared).copy_entry(entry.name, FeatureCache(dirs["features"]))


def train(cfg: DictConfig) -> None:
    from transferlab.stages import train as stage

    dirs = artifact_dirs(cfg)
    stage.run(cfg, dirs["data"], features_entry(cfg), dirs["model"])


def evaluate(cfg: DictConfig) -> None:
    from transferlab.stages import evaluate as stage

    dirs = artifact_dirs(cfg)
    stage.run(dirs["data"], features_entry(cfg), dirs["model"], dirs["eval"])


def matrix_cell(cfg: DictConfig, strategy: str, size: str, seed: int) -> tuple[DictConfig, Path]:
    """One item of dvc.yaml's compare matrix, as its command line gives it: the cell's config (the
    rule every front end uses) and its run folder."""
    from transferlab import pipeline

    size = size if size == "all" else (float(size) if "." in size else int(size))
    cell = pipeline.cell_config(cfg, strategy, size, seed, CONF)
    return cell, artifact_dirs(cfg)["compare"] / pipeline.run_name(strategy, size, seed)


def compare(cfg: DictConfig, strategy: str, size: str, seed: int) -> None:
    from transferlab import pipeline

    pipeline.run_cell(*matrix_cell(cfg, strategy, size, seed))


def report(cfg: DictConfig) -> None:
    """Refused by pipeline.write_report where paths.cache_dir (no stage's output) lacks the
    comparison's measured extraction."""
    from transferlab import pipeline

    dirs = artifact_dirs(cfg)
    files = [dirs["compare"] / cell.name / "metrics.json" for cell in pipeline.grid(cfg, CONF)]
    print(pipeline.write_report(cfg, files, dirs["report"], CONF)["recommendation"])
