"""Stage `finetune`: backbone + head trained together; the strategy says which groups train."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning.pytorch as L
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from transferlab.backbones import build_backbone
from transferlab.data.datamodules import InputDataModule
from transferlab.modules import FinetuneClassifier, build_head
from transferlab.stages import train_head
from transferlab.resources import ResourceMeter
from transferlab.stages.model_card import write_model_card
from transferlab.strategies import apply_strategy, count_parameters, param_groups, strategy_callbacks
from transferlab.trainer import build_trainer, checked_resume, fit_summary, keep_earlier_logs, save_best_weights


def build_module(cfg: DictConfig, num_classes: int) -> FinetuneClassifier:
    s = cfg.strategy
    backbone = build_backbone(cfg.backbone)
    apply_strategy(backbone, s)
    head = build_head(backbone.feature_dim, num_classes, s.head)
    return FinetuneClassifier(backbone, head, partial(param_groups, backbone, head, s),
                              s.weight_decay, s.warmup_ratio)


def start_from_probe(cfg: DictConfig, module: FinetuneClassifier, data_dir: Path, features_dir: Path,
                     model_dir: Path) -> None:
    """LP-FT: train a linear probe on the cached features, then fine-tune from its head."""
    probe = OmegaConf.merge(cfg, {"strategy": {**OmegaConf.to_container(cfg.strategy.probe),
                                               "kind": "head", "trainable": "head", "head": {"type": "linear"},
                                               "warmup_ratio": 0.0, "gradient_clip_val": None}})
    train_head.run(probe, data_dir, features_dir, model_dir / "probe")
    weights = load_file(model_dir / "probe" / "model.safetensors")
    module.head.load_state_dict({k.removeprefix("head."): v for k, v in weights.items()})


def run(cfg: DictConfig, data_dir: str | Path, model_dir: str | Path,
        features_dir: str | Path | None = None) -> Path:
    data_dir, model_dir = Path(data_dir), Path(model_dir)
    labels = json.loads((data_dir / "labels.json").read_text())
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, len(labels))
    resume = checked_resume(model_dir, module)  # a killed run's last.ckpt, checked to be this model's
    if cfg.strategy.probe_first and resume is None:  # a resumed run's checkpoint holds the head already
        start_from_probe(cfg, module, data_dir, Path(features_dir), model_dir)
    if resume:
        keep_earlier_logs(model_dir, resume[1])
    datamodule = InputDataModule(data_dir, module.backbone, cfg.strategy.batch_size)
    trainer = build_trainer(cfg, model_dir, every_epoch_checkpoint=True,
                            extra_callbacks=strategy_callbacks(cfg.strategy))
    with ResourceMeter() as meter:
        trainer.fit(module, datamodule, ckpt_path=resume and resume[0], weights_only=True)
    fit = fit_summary(module, model_dir)
    save_best_weights(trainer, module, model_dir)
    trainable, total = count_parameters(module)  # after fit: gradual unfreezing's final count
    trained = [n for n, g in module.backbone.layer_groups() if any(p.requires_grad for p in g.parameters())]
    resumed = {"resumed_after_epoch": resume[1]} if resume else {}
    return write_model_card(model_dir, cfg, labels, module.backbone.feature_dim, meter, fit, trained,
                            trainable_params=trainable, total_params=total, **resumed)
