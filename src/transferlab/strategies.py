"""Strategies: which of the backbone's layer groups train. The backbone says what its groups are."""

from __future__ import annotations

from torch import nn

from transferlab.backbones import Backbone


def freeze_backbone(backbone: Backbone) -> None:
    """Frozen weights and eval mode, so dropout is off and normalisation statistics stay put."""
    backbone.requires_grad_(False)
    backbone.eval()


def unfreeze_groups(backbone: Backbone, names: list[str] | None = None) -> None:
    for name, module in backbone.layer_groups():
        if names is None or name in names:
            module.requires_grad_(True)


def apply_strategy(backbone: Backbone, trainable: str) -> None:
    """`head`: the whole backbone frozen; `all`: every layer group trains."""
    freeze_backbone(backbone)
    if trainable == "all":
        backbone.train()
        unfreeze_groups(backbone)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, read off the model after the strategy ran."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
