"""Stage `extract`: the frozen backbone embeds every split once, into the FeatureCache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning.pytorch as L
import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.atomic import write_json
from transferlab.backbones import backbone_class, build_backbone
from transferlab.data.datamodules import InputDataModule, in_row_order
from transferlab.data.splits import SPLITS
from transferlab.modules import FeatureExtractor
from transferlab.features import FeatureCache, content_key
from transferlab.stages import artifact_dirs
from transferlab.strategies import count_parameters, freeze_backbone
from transferlab.trainer import quiet_lightning


def data_hash(data_dir: Path) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update((data_dir / f"{split}.parquet").read_bytes())
    return digest.hexdigest()[:16]


def cache_key(backbone: DictConfig, extract: DictConfig, data_dir: Path) -> str:
    return content_key(backbone=backbone_class(backbone).identity(backbone), name=backbone.name,
                       precision=extract.precision, data=data_hash(data_dir))


def run(backbone: DictConfig, extract: DictConfig, data_dir: str | Path, cache_root: str | Path) -> Path:
    """Returns the cache entry holding `<split>.safetensors` + meta.json; a hit loads nothing."""
    data_dir, cache = Path(data_dir), FeatureCache(cache_root)
    key = cache_key(backbone, extract, data_dir)
    with cache.lock(key):
        if all(cache.load(key, s) is not None for s in SPLITS) and (cache.entry(key) / "meta.json").is_file():
            return cache.entry(key)
        model = build_backbone(backbone)
        freeze_backbone(model)
        datamodule = InputDataModule(data_dir, model, batch_size=extract.batch_size,
                                    eval_batch_size=extract.batch_size)
        quiet_lightning()
        trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                            precision="bf16-mixed" if extract.precision == "bf16" else "32-true",
                            enable_model_summary=False)
        for split in SPLITS:
            loader = datamodule.loader(split)
            features = in_row_order(torch.cat(trainer.predict(FeatureExtractor(model), loader)), loader)
            cache.save(key, split, features, {"split": split})
        write_json(cache.entry(key) / "meta.json",
                   {"backbone": OmegaConf.to_container(backbone), "precision": extract.precision,
                    "feature_dim": model.feature_dim, "backbone_params": count_parameters(model)[1]})
    return cache.entry(key)


def dvc_main(cfg: DictConfig) -> None:
    dirs = artifact_dirs(cfg)
    run(cfg.backbone, cfg.extract, dirs["data"], dirs["features"])
