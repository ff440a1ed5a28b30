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
