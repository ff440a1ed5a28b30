"""The backbone interface that keeps every strategy model-agnostic."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn


class Backbone(nn.Module, ABC):
    """Pre-trained weights that turn prepared inputs into pooled features of `feature_dim`.

    `layer_groups` lists the model's parts in order from input to output (embeddings,
    block 1 ... block N, pooling), so a strategy can say "train the top k groups"
    without knowing which family it is.
    """

    feature_dim: int
    fingerprint: str  # identifies the weights, for content-addressed caches
    input_column: str = "text"  # the prepared splits' column this backbone reads
    lora_targets: tuple[str, ...] = ()  # module names LoRA adapts unless the strategy names others

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: Any) -> "Backbone": ...

    @classmethod
    @abstractmethod
    def identity(cls, cfg: Any) -> dict:
        """Everything the features depend on (weights fingerprint, preprocessing), without loading."""

    @abstractmethod
    def encode(self, items: list[Any]) -> list[Any]:
        """Raw inputs (texts, images) -> one preprocessed item each; done once, not per epoch."""

    @abstractmethod
    def collate(self, encoded: list[Any]) -> dict[str, torch.Tensor]:
        """Preprocessed items -> the model inputs of one batch (padding, stacking)."""

    def item_length(self, encoded_item: Any) -> int:
        """Cost proxy for length-bucketed inference; items of one size need no bucketing."""
        return 0

    def preprocess(self, items: list[Any]) -> dict[str, torch.Tensor]:
        return self.collate(self.encode(items))

    @abstractmethod
    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs -> pooled features, shape (batch, feature_dim)."""

    @abstractmethod
    def layer_groups(self) -> list[tuple[str, nn.Module]]: ...

    def train(self, mode: bool = True) -> "Backbone":
        """`.train()` that leaves frozen normalisation layers in eval mode.

        A BatchNorm (or any norm layer with running statistics) whose weights are all frozen
        keeps normalising with, and never updates, its pre-trained statistics, however often
        Lightning or a strategy calls `.train()` on the model around it. Its mode follows its
        weights at the time of the call: unfreeze them, call `.train()` again, and it trains.
        """
        super().train(mode)
        if mode:
            all_frozen = not any(p.requires_grad for p in self.parameters())
            for module in self.modules():
                if is_frozen_norm(module, all_frozen):
                    module.eval()
        return self


def is_frozen_norm(module: nn.Module, all_frozen: bool = False) -> bool:
    """A normalisation layer with running statistics (BatchNorm*, tracking InstanceNorm*) whose
    parameters are all frozen; one without affine parameters counts as frozen when the whole
    backbone (`all_frozen`) is. Lightning's `BaseFinetuning.freeze` turns `track_running_stats`
    off on frozen BatchNorm, which in train mode would normalise with batch statistics instead of
    the pre-trained ones: eval mode keeps the pre-trained statistics in use either way.
    """
    if not isinstance(module, nn.modules.batchnorm._NormBase) or module.running_mean is None:
        return False
    params = list(module.parameters())
    return not any(p.requires_grad for p in params) if params else all_frozen
