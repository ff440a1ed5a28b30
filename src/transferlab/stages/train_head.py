"""Stage `train_head` (transfer learning): a linear head on the cached frozen features."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as L
from omegaconf import DictConfig
from safetensors.torch import load_file

from transferlab.data.datamodules import FeatureDataModule, labels_of
from transferlab.modules import HeadClassifier, build_head
from transferlab.resources import ResourceMeter
from transferlab.stages.model_card import write_model_card
from transferlab.strategies import count_parameters
from transferlab.trainer import build_trainer, fit_summary, save_best_weights


def load_features(features_dir: Path, split: str):
    return load_file(Path(features_dir) / f"{split}.safetensors")["features"]


def build_module(cfg: DictConfig, feature_dim: int, num_classes: int) -> HeadClassifier:
    head = build_head(feature_dim, num_classes, cfg.strategy.head)
    return HeadClassifier(head, cfg.strategy.lr, cfg.strategy.weight_decay, cfg.strategy.optimizer)


def run(cfg: DictConfig, data_dir: str | Path, features_dir: str | Path, model_dir: str | Path) -> Path:
    data_dir, features_dir, model_dir = Path(data_dir), Path(features_dir), Path(model_dir)
    meta = json.loads((features_dir / "meta.json").read_text())
    labels = json.loads((data_dir / "labels.json").read_text())
    splits = ("train", "val")
    datamodule = FeatureDataModule({s: load_features(features_dir, s) for s in splits},
                                   {s: labels_of(data_dir, s) for s in splits},
                                   None if cfg.strategy.optimizer == "lbfgs" else cfg.strategy.batch_size)
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, meta["feature_dim"], len(labels))
    trainer = build_trainer(cfg, model_dir, every_epoch_checkpoint=False, single_process=True)
    with ResourceMeter() as meter:
        trainer.fit(module, datamodule)
    fit = fit_summary(module, model_dir)
    save_best_weights(trainer, module, model_dir)
    trainable, head_total = count_parameters(module)
    return write_model_card(model_dir, cfg, labels, meta["feature_dim"], meter, fit, [],
                            trainable_params=trainable, total_params=head_total + meta["backbone_params"])
