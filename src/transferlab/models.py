"""The one place a model is built for a strategy, or rebuilt from a trained run's folder.

Training, evaluation, `transferlab predict`, export and LP-FT's probe all build through here, so a
run folder always rebuilds into the module that was trained."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.backbones import build_backbone
from transferlab.checkpoints import check_fits, load_weights
from transferlab.config import checked
from transferlab.errors import DataError, first_line
from transferlab.modules import Classifier, FinetuneClassifier, HeadClassifier, build_head
from transferlab.strategy import Strategy, resolve


def build_head_module(strategy: Strategy, feature_dim: int, num_classes: int,
                      weight_decay: float | None = None) -> HeadClassifier:
    """A head strategy's module, trained on cached features (`weight_decay`: an L-BFGS head's L2
    strength for one of its C values, see training.fit_head)."""
    head = build_head(feature_dim, num_classes, strategy.head)
    return HeadClassifier(head, strategy.lr, strategy.weight_decay if weight_decay is None else weight_decay,
                          strategy.optimizer, strategy.tol)


def build_finetune_module(cfg: DictConfig, strategy: Strategy, num_classes: int) -> FinetuneClassifier:
    """Backbone + head, with the strategy's trainable set and optimizer groups."""
    backbone = build_backbone(cfg.backbone)
    strategy.apply(backbone)
    head = build_head(backbone.feature_dim, num_classes, strategy.head)
    return FinetuneClassifier(backbone, head, partial(strategy.param_groups, backbone, head),
                              strategy.weight_decay, strategy.warmup_ratio)


def build(cfg: DictConfig, num_classes: int, feature_dim: int | None = None) -> Classifier:
    """The untrained module of `cfg`'s strategy (a head needs the features' `feature_dim`)."""
    strategy = resolve(cfg)
    if strategy.kind == "head":
        return build_head_module(strategy, feature_dim, num_classes)
    return build_finetune_module(cfg, strategy, num_classes)


@dataclass
class TrainedModel:
    """A trained run rebuilt from its folder: its config, model card and module with its weights."""

    run_dir: Path
    cfg: DictConfig
    card: dict
    module: Classifier

    @property
    def labels(self) -> list[str]:
        return self.card["labels"]

    @property
    def strategy(self) -> Strategy:
        return resolve(self.cfg)

    def logits(self, items: list) -> torch.Tensor:
        """Logits over raw inputs (texts, images); a head run embeds them with its frozen backbone."""
        from transferlab.inference import embed, feature_logits, input_logits

        if self.card["kind"] == "head":
            return feature_logits(self.module, embed(self.cfg.backbone, self.cfg.extract, items)[0], self.cfg.trainer)
        return input_logits(self.module, items, self.cfg.extract.batch_size, self.cfg.trainer)


REQUIRED = ("config.yaml", "model.json", "model.safetensors")


def load_trained(run_dir: str | Path) -> TrainedModel:
    """A run folder's model, refused in one line when the folder is not a trained run or its weights
    belong to another model (another backbone, label set or strategy)."""
    run_dir = Path(run_dir)
    for name in REQUIRED:
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir}: not a trained run (no {name})")
    cfg = checked(OmegaConf.load(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    card = read_card(run_dir / "model.json")
    weights = load_weights(run_dir / "model.safetensors")
    module = build(cfg, len(card["labels"]), card["feature_dim"])
    check_fits(weights, module, run_dir / "model.safetensors")
    module.load_state_dict(weights)
    return TrainedModel(run_dir, cfg, card, module.eval())


def read_card(path: Path) -> dict:
    """model.json with the fields a rebuild needs; a hand-edited or truncated one in one line."""
    try:
        card = json.loads(path.read_text())
        missing = [k for k in ("kind", "labels", "feature_dim") if k not in card]
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a model card ({first_line(exc)})") from None
    if missing:
        raise DataError(f"{path}: not a model card (no {missing[0]})")
    return card
