"""Stage `train`: the strategy's kind picks transfer learning (train_head) or fine-tuning (finetune)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from transferlab.data.splits import check_prepared
from transferlab.stages import artifact_dirs, extract, finetune, train_head
from transferlab.features import FeatureCache


def run(cfg: DictConfig, data_dir: str | Path, features_dir: str | Path | None, model_dir: str | Path) -> Path:
    check_prepared(data_dir)  # a label unseen in train fails here, in one line, before any training
    if cfg.strategy.kind == "head":
        return train_head.run(cfg, data_dir, features_dir, model_dir)
    return finetune.run(cfg, data_dir, model_dir, features_dir)


def features_entry(cfg: DictConfig, data_dir: Path, features_root: Path) -> Path:
    return FeatureCache(features_root).entry(extract.cache_key(cfg.backbone, cfg.extract, data_dir))


def dvc_main(cfg: DictConfig) -> None:
    dirs = artifact_dirs(cfg)
    run(cfg, dirs["data"], features_entry(cfg, dirs["data"], dirs["features"]), dirs["model"])
