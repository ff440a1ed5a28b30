"""Backbones: one adapter per model family behind the `Backbone` interface; one registry."""

from __future__ import annotations

from omegaconf import DictConfig

from transferlab.backbones.base import Backbone
from transferlab.backbones.efficientnet import EfficientNetLite
from transferlab.backbones.hf_encoder import HFEncoder
from transferlab.errors import ConfigError

BACKBONES: dict[str, type[Backbone]] = {"minilm": HFEncoder, "hf_encoder": HFEncoder,
                                        "efficientnet_lite0": EfficientNetLite}


def backbone_class(cfg: DictConfig) -> type[Backbone]:
    if cfg.name not in BACKBONES:
        raise ConfigError(f"backbone.name={cfg.name!r}: unknown; choose one of {sorted(BACKBONES)}")
    return BACKBONES[cfg.name]


def build_backbone(cfg: DictConfig) -> Backbone:
    return backbone_class(cfg).from_config(cfg)


__all__ = ["Backbone", "BACKBONES", "backbone_class", "build_backbone"]
