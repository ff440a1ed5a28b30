"""Fitting a strategy's model with Lightning: a head on cached features, or backbone + head.

The train stage calls `fit`; LP-FT's probe is `fit_head` on its own head strategy, so the probe
a fine-tune starts from is trained exactly as that head strategy is when a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as L
from omegaconf import DictConfig
from safetensors.torch import load_file

from transferlab.data.datamodules import FeatureDataModule, InputDataModule, labels_of
from transferlab.features import load_features
from transferlab.model_card import write_model_card
from transferlab.models import build_finetune_module, build_head_module
from transferlab.resources import ResourceMeter, TrainClock
from transferlab.strategy import Strategy, count_parameters, resolve
from transferlab.trainer import build_trainer, checked_resume, fit_summary, keep_earlier_logs, save_best_weights


def fit(cfg: DictConfig, data_dir: Path, features_dir: Path | None, model_dir: Path) -> Path:
    strategy = resolve(cfg)
    if strategy.kind == "head":
        return fit_head(cfg, strategy, data_dir, features_dir, model_dir)
    return fit_finetune(cfg, strategy, data_dir, features_dir, model_dir)


def fit_head(cfg: DictConfig, strategy: Strategy, data_dir: Path, features_dir: Path, model_dir: Path) -> Path:
    """A head on the frozen features: full batch for L-BFGS, mini-batches for AdamW."""
    meta = json.loads((features_dir / "meta.json").read_text())
    labels = json.loads((data_dir / "labels.json").read_text())
    splits = ("train", "val")
    datamodule = FeatureDataModule({s: load_features(features_dir, s) for s in splits},
                                   {s: labels_of(data_dir, s) for s in splits},
                                   None if strategy.full_batch else strategy.budget.batch_size)
    L.seed_everything(cfg.seed, verbose=False)
    module = build_head_module(strategy, meta["feature_dim"], len(labels))
    trainer = build_trainer(cfg, strategy, model_dir, resumable=False, single_process=True)
    with ResourceMeter() as meter:
        trainer.fit(module, datamodule)
    fit = fit_summary(module, model_dir)
    save_best_weights(trainer, module, model_dir)
    trainable, head_total = count_parameters(module)
    return write_model_card(model_dir, cfg, strategy, labels, meta["feature_dim"], meter, meter.seconds, fit, [],
                            trainable_params=trainable, total_params=head_total + meta["backbone_params"])


def start_from_probe(cfg: DictConfig, probe: Strategy, module, data_dir: Path, features_dir: Path,
                     model_dir: Path) -> None:
    """LP-FT: the probe (a head strategy) trained on the cached features; fine-tuning starts from its head."""
    fit_head(cfg, probe, data_dir, features_dir, model_dir / "probe")
    weights = load_file(model_dir / "probe" / "model.safetensors")
    module.head.load_state_dict({k.removeprefix("head."): v for k, v in weights.items()})


def fit_finetune(cfg: DictConfig, strategy: Strategy, data_dir: Path, features_dir: Path | None,
                 model_dir: Path) -> Path:
    """Backbone + head; a killed or failed run resumes from its last epoch checkpoint, and its
    training time counts every attempt (TrainClock)."""
    labels = json.loads((data_dir / "labels.json").read_text())
    L.seed_everything(cfg.seed, verbose=False)
    module = build_finetune_module(cfg, strategy, len(labels))
    resume = checked_resume(model_dir, module)  # a killed run's last.ckpt, checked to be this model's
    if strategy.probe is not None and resume is None:  # a resumed run's checkpoint holds the head already
        start_from_probe(cfg, strategy.probe, module, data_dir, features_dir, model_dir)
    if resume:
        keep_earlier_logs(model_dir, resume[1])
    datamodule = InputDataModule(data_dir, module.backbone, strategy.budget.batch_size)
    clock = TrainClock(model_dir / "clock.json")
    trainer = build_trainer(cfg, strategy, model_dir, resumable=True, extra_callbacks=[clock, *strategy.callbacks()])
    with ResourceMeter() as meter:
        trainer.fit(module, datamodule, ckpt_path=resume and resume[0], weights_only=True)
    fit = fit_summary(module, model_dir)
    save_best_weights(trainer, module, model_dir)
    trainable, total = count_parameters(module)  # after fit: gradual unfreezing's final count
    trained = [n for n, g in module.backbone.layer_groups() if any(p.requires_grad for p in g.parameters())]
    resumed = {"resumed_after_epoch": resume[1]} if resume else {}
    earlier = fit.pop("earlier_attempts_seconds")
    resumed |= {"earlier_attempts_seconds": round(earlier, 3)} if earlier else {}
    return write_model_card(model_dir, cfg, strategy, labels, module.backbone.feature_dim, meter, fit.pop("train_seconds"),
                            fit, trained, trainable_params=trainable, total_params=total, **resumed)
