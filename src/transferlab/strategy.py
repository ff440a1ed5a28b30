"""The strategy, resolved once from config into a small typed object: what trains, at which
learning rates, unfrozen when, on what budget, and (LP-FT) the head strategy it starts from.

Everything here works on `Backbone.layer_groups()` (ordered input -> output), never on a model
family's module names, so each strategy is written once for every backbone. Nothing else reads
`cfg.strategy`: stages, models and the pipeline ask this object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from lightning.pytorch.callbacks import BaseFinetuning
from omegaconf import DictConfig, OmegaConf
from torch import nn

from transferlab.backbones import Backbone
from transferlab.config import c_values


@dataclass(frozen=True)
class Head:
    type: str  # linear | mlp
    hidden_dim: int
    dropout: float


@dataclass(frozen=True)
class Lora:
    r: int
    alpha: int
    dropout: float
    target_modules: Optional[tuple[str, ...]]  # None: the backbone's declared default


@dataclass(frozen=True)
class Budget:
    """How long a fit may run and when it stops early (on validation loss).

    Epochs alone starve small data sets (50 labels at batch 16 are 4 steps an epoch), so a fit gets
    at least `min_steps` optimiser steps; validation, which costs forward passes too, runs about
    every `val_every_n_steps` steps, in whole epochs so that every checkpoint is an epoch's end."""

    max_epochs: int
    patience: int  # validations without improvement, counted from min_steps on
    batch_size: int
    min_steps: int = 0
    val_every_n_steps: int = 1

    def trainer_args(self, train_rows: int, processes: int = 1, full_batch: bool = False) -> dict:
        """max_epochs (min_steps wins over it) and check_val_every_n_epoch for `train_rows` rows
        split over `processes`. The last epoch is always a validated one: the epochs are split
        evenly into the whole number of validations nearest to one every val_every_n_steps (at
        least one, at most one an epoch), so a fit runs fewer epochs more than it asked for than it
        has validations (none when it asked for fewer epochs than one interval: max_epochs=1 stays 1)."""
        steps = 1 if full_batch else max(1, math.ceil(train_rows / (self.batch_size * processes)))
        epochs = max(self.max_epochs, math.ceil(self.min_steps / steps))
        validations = min(epochs, max(1, round(epochs * steps / max(1, self.val_every_n_steps))))
        every = math.ceil(epochs / validations)
        return {"max_epochs": validations * every, "check_val_every_n_epoch": every,
                "min_steps": self.min_steps or None}


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str  # head: trained on cached features | finetune: backbone + head
    trainable: str  # head | all | last_n | lora: what trains from the first epoch
    last_n: int
    layer_decay: Optional[float]  # LLRD: each lower group's lr = the one above's x this
    unfreeze_every: Optional[int]  # gradual unfreezing: one more group every k epochs
    head: Head
    lora: Optional[Lora]  # trainable=lora only
    optimizer: str  # adamw | lbfgs (heads: full batch to convergence, L2 from C)
    C: tuple[float, ...]  # lbfgs: scikit-learn's inverse L2 strengths, the best on validation kept
    tol: float  # lbfgs: the largest gradient entry at which a solve has converged
    lr: float
    head_lr: float  # the new head's learning rate (finetune); = lr for heads
    weight_decay: float
    warmup_ratio: float
    gradient_clip_val: Optional[float]
    budget: Budget
    probe: Optional["Strategy"]  # LP-FT: the head strategy trained first, whose head fine-tuning starts from

    @classmethod
    def from_config(cls, s: DictConfig | dict) -> "Strategy":
        s = OmegaConf.create(s) if isinstance(s, dict) else s
        lora = s.lora if s.trainable == "lora" else None
        return cls(
            name=s.name, kind=s.kind, trainable=s.trainable, last_n=s.last_n, layer_decay=s.layer_decay,
            unfreeze_every=s.unfreeze_every, head=Head(s.head.type, s.head.hidden_dim, s.head.dropout),
            lora=None if lora is None else Lora(lora.r, lora.alpha, lora.dropout,
                                                tuple(lora.target_modules) if lora.target_modules else None),
            optimizer=s.optimizer, C=tuple(c_values(s.C)), tol=s.tol, lr=s.lr, head_lr=s.head_lr or s.lr, weight_decay=s.weight_decay,
            warmup_ratio=s.warmup_ratio, gradient_clip_val=s.gradient_clip_val,
            budget=Budget(s.max_epochs, s.patience, s.batch_size, s.min_steps, s.val_every_n_steps),
            probe=None if s.get("probe") is None else cls.from_config(s.probe))

    @property
    def needs_features(self) -> bool:
        """Head strategies, and LP-FT's probe, train on the cached frozen features."""
        return self.kind == "head" or self.probe is not None

    @property
    def full_batch(self) -> bool:
        return self.optimizer == "lbfgs"

    def declared_groups(self, group_names: list[str]) -> list[str]:
        """The layer groups whose own weights train from the first epoch."""
        if self.unfreeze_every or self.trainable in ("head", "lora"):
            return []
        if self.trainable == "last_n":
            return group_names[-self.last_n:]
        return list(group_names)

    def apply(self, backbone: Backbone) -> None:
        """Freeze everything, then unfreeze the declared groups (or inject LoRA adapters).

        Frozen groups stay in eval mode (no dropout, normalisation statistics untouched); with LoRA
        the whole backbone trains in train mode, as PEFT does, though only the adapters learn."""
        freeze(backbone)
        groups = backbone.layer_groups()
        names = self.declared_groups([n for n, _ in groups])
        if names and len(names) == len(groups):
            backbone.train()
        for name, module in groups:
            if name in names:
                module.requires_grad_(True)
                module.train()
        if self.lora is not None:
            from transferlab.lora import inject_lora

            inject_lora(backbone, self.lora)
            backbone.train()

    def param_groups(self, backbone: Backbone, head: nn.Module) -> list[dict]:
        """One optimizer group per layer group (named, with its own lr), then the head.

        With gradual unfreezing the still-frozen groups are in the optimizer from the start: the
        optimizer skips parameters without gradients, and the lr scheduler covers every group, so
        nothing has to be added to a running optimizer (which is what breaks schedulers elsewhere)."""
        groups, seen = [], set()
        for depth, (name, module) in enumerate(reversed(backbone.layer_groups())):
            params = [p for p in module.parameters()
                      if (p.requires_grad or self.unfreeze_every) and id(p) not in seen]
            seen.update(map(id, params))
            if params:
                lr = self.lr * (self.layer_decay ** depth if self.layer_decay else 1.0)
                groups.append({"params": params, "lr": lr, "name": name})
        rest = [p for p in backbone.parameters() if p.requires_grad and id(p) not in seen]
        if rest:  # trainable weights outside every declared group (e.g. a final norm)
            groups.append({"params": rest, "lr": self.lr, "name": "backbone_rest"})
        groups.reverse()  # input -> output, as the layer groups are listed
        groups.append({"params": list(head.parameters()), "lr": self.head_lr, "name": "head"})
        return groups

    def callbacks(self) -> list:
        return [GradualUnfreezing(self.unfreeze_every)] if self.unfreeze_every else []


def freeze(backbone: Backbone) -> None:
    """Frozen weights and eval mode, so dropout is off and normalisation statistics stay put."""
    backbone.requires_grad_(False)
    backbone.eval()


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


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, read off the model after the strategy ran."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def resolve(cfg: Any) -> Strategy:
    """The strategy of a composed config (`cfg.strategy`)."""
    return Strategy.from_config(cfg.strategy)
