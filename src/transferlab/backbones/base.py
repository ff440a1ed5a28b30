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

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: Any) -> "Backbone": ...

    @abstractmethod
    def preprocess(self, items: list[Any]) -> dict[str, torch.Tensor]:
        """Raw inputs (texts, images) -> model inputs for one batch."""

    @abstractmethod
    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs -> pooled features, shape (batch, feature_dim)."""

    @abstractmethod
    def layer_groups(self) -> list[tuple[str, nn.Module]]: ...
