"""Stage `finetune`: backbone + head trained together; the strategy says which groups train."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as L
from omegaconf import DictConfig

from transferlab.backbones import build_backbone
from transferlab.data.datamodules import InputDataModule
from transferlab.modules import FinetuneClassifier
from transferlab.resources import ResourceMeter
from transferlab.stages.model_card import write_model_card
from transferlab.strategies import apply_strategy, count_parameters
from transferlab.trainer import build_trainer, resume_path, save_best_weights


def build_module(cfg: DictConfig, num_classes: int) -> FinetuneClassifier:
    backbone = build_backbone(cfg.backbone)
    apply_strategy(backbone, cfg.strategy.trainable)
    s = cfg.strategy
    return FinetuneClassifier(backbone, num_classes, s.lr, s.head_lr, s.weight_decay, s.warmup_ratio)


def run(cfg: DictConfig, data_dir: str | Path, model_dir: str | Path) -> Path:
    data_dir, model_dir = Path(data_dir), Path(model_dir)
    labels = json.loads((data_dir / "labels.json").read_text())
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, len(labels))
    trainable, total = count_parameters(module)
    datamodule = InputDataModule(data_dir, module.backbone, cfg.strategy.batch_size)
    trainer = build_trainer(cfg, model_dir, every_epoch_checkpoint=True)
    with ResourceMeter() as meter:
        trainer.fit(module, datamodule, ckpt_path=resume_path(model_dir))
    save_best_weights(trainer, module, model_dir)
    return write_model_card(model_dir, cfg, labels, module.backbone.feature_dim, meter, trainer,
                            trainable_params=trainable, total_params=total)
