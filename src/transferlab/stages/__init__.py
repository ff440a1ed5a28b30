"""The pipeline's stages. Each module has `run(...)` (the work) and `dvc_main(cfg)` (fixed paths).

STAGES is the single list of stages: the CLI dispatches on it and a test checks dvc.yaml against it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

STAGES = ("prepare", "extract", "train", "evaluate", "compare", "report")


def artifact_dirs(cfg: DictConfig) -> dict[str, Path]:
    """The fixed layout `dvc repro` uses (flows use Hydra's run dir and the content-addressed cache)."""
    root = Path(cfg.paths.artifacts_dir)
    return {"data": root / "data", "features": root / "features",
            "model": root / "model", "eval": root / "eval",
            "compare": root / "compare", "report": root / "report"}
