"""Strategies: which of the backbone's layer groups train, at which learning rates, unfrozen when.

Everything here works on `Backbone.layer_groups()` (ordered input -> output), never on a model
family's module names, so each strategy is written once for every backbone. The knobs compose:
`trainable` (head | all | last_n | lora), `layer_decay` (LLRD), `unfreeze_every` (gradual
unfreezing) and `probe_first` (LP-FT, handled by the finetune stage).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn

from transferlab.backbones import Backbone


def freeze_backbone(backbone: Backbone) -> None:
    """Frozen weights and eval mode, so dropout is off and normalisation statistics stay put."""
    backbone.requires_grad_(False)
    backbone.eval()


def declared_trainable_groups(group_names: list[str], strategy: Any) -> list[str]:
    """The layer groups whose own weights train from the first epoch, as the config declares."""
    if strategy.unfreeze_every or strategy.trainable in ("head", "lora"):
        return []
    if strategy.trainable == "last_n":
        return group_names[-strategy.last_n:]
    return list(group_names)


def apply_strategy(backbone: Backbone, strategy: Any) -> None:
    """Freeze everything, then unfreeze the declared groups (or inject LoRA adapters).

    Frozen groups stay in eval mode (no dropout, normalisation statistics untouched); with LoRA
    the whole backbone trains in train mode, as PEFT does, though only the adapters learn.
    """
    freeze_backbone(backbone)
    names = declared_trainable_groups([n for n, _ in backbone.layer_groups()], strategy)
    if names == [n for n, _ in backbone.layer_groups()]:
        backbone.train()
    for name, module in backbone.layer_groups():
        if name in names:
            module.requires_grad_(True)
            module.train()
    if strategy.trainable == "lora":
        from transferlab.lora import inject_lora

        inject_lora(backbone, strategy.lora)
        backbone.train()


def param_groups(backbone: Backbone, head: nn.Module, strategy: Any) -> list[dict]:
    """One optimizer group per layer group (named, with its own lr), then the head.

    With gradual unfreezing the still-frozen groups are in the optimizer from the start: the
    optimizer skips parameters without gradients, and the lr scheduler covers every group, so
    nothing has to be added to a running optimizer (which is what breaks schedulers elsewhere).
    """
    groups, seen = [], set()
    layer_groups = backbone.layer_groups()
    for depth, (name, module) in enumerate(reversed(layer_groups)):
        params = [p for p in module.parameters()
                  if (p.requires_grad or strategy.unfreeze_every) and id(p) not in seen]
        seen.update(map(id, params))
        if params:
            lr = strategy.lr * (strategy.layer_decay ** depth if strategy.layer_decay else 1.0)
            groups.append({"params": params, "lr": lr, "name": name})
    rest = [p for p in backbone.parameters() if p.requires_grad and id(p) not in seen]
    if rest:  # trainable weights outside every declared group (e.g. a final norm)
        groups.append({"params": rest, "lr": strategy.lr, "name": "backbone_rest"})
    groups.reverse()  # input -> output, as the layer groups are listed
    groups.append({"params": list(head.parameters()), "lr": strategy.head_lr or strategy.lr, "name": "head"})
    return groups


class GradualUnfreezing(BaseFinetuning):
    """ULMFiT-style: head only first, then one more layer group (from the top) every k epochs."""

    def __init__(self, every: int):
        super().__init__()
        self.every = every

    def freeze_before_training(self, pl_module) -> None:
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Idempotent in `epoch`, so a run resumed mid-schedule unfreezes the same groups."""
        groups = [m for _, m in pl_module.backbone.layer_groups()]
        count = min(epoch // self.every, len(groups))
        if count:
            unfrozen = groups[len(groups) - count:]
            self.make_trainable(unfrozen)
            for group in unfrozen:  # make_trainable leaves modes alone: dropout and BatchNorm train again
                group.train()
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        pl_module.log("trainable_params", float(trainable), on_step=False, on_epoch=True)


def strategy_callbacks(strategy: Any) -> list:
    return [GradualUnfreezing(strategy.unfreeze_every)] if strategy.unfreeze_every else []


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, read off the model after the strategy ran."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def needs_features(strategy: Any) -> bool:
    """Head-only strategies and LP-FT's probe train on the cached frozen features."""
    return strategy.kind == "head" or bool(strategy.probe_first)
