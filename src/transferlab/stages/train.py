"""Stage `train`: the strategy's model fitted on the prepared splits (and cached features)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from transferlab.data.splits import check_prepared
from transferlab.training import fit


def run(cfg: DictConfig, data_dir: str | Path, features_dir: str | Path | None, model_dir: str | Path) -> Path:
    check_prepared(data_dir)  # a label unseen in train fails here, in one line, before any training
    return fit(cfg, Path(data_dir), Path(features_dir) if features_dir else None, Path(model_dir))
