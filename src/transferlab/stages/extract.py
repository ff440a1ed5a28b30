"""Stage `extract`: the frozen backbone embeds every split once, into the FeatureCache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning.pytorch as L
import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.atomic import write_json
from transferlab.backbones import build_backbone
from transferlab.backbones.hf_encoder import resolve_model_location, weights_fingerprint
from transferlab.data.datamodules import TextDataModule
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
    location = resolve_model_location(backbone.model, backbone.local_package)
    return content_key(weights=weights_fingerprint(location), max_length=backbone.max_length,
                            pooling=backbone.pooling, normalize=backbone.normalize,
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
        datamodule = TextDataModule(data_dir, model, batch_size=extract.batch_size,
                                    eval_batch_size=extract.batch_size)
        quiet_lightning()
        trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                            precision="bf16-mixed" if extract.precision == "bf16" else "32-true",
                            enable_model_summary=False)
        for split in SPLITS:
            loader = datamodule.loader(split)
            sorted_features = torch.cat(trainer.predict(FeatureExtractor(model), loader))
            features = torch.empty_like(sorted_features)
            features[torch.tensor(loader.dataset.indices)] = sorted_features
            cache.save(key, split, features, {"split": split})
        write_json(cache.entry(key) / "meta.json",
                   {"backbone": OmegaConf.to_container(backbone), "precision": extract.precision,
                    "feature_dim": model.feature_dim, "backbone_params": count_parameters(model)[1]})
    return cache.entry(key)


def dvc_main(cfg: DictConfig) -> None:
    dirs = artifact_dirs(cfg)
    run(cfg.backbone, cfg.extract, dirs["data"], dirs["features"])
