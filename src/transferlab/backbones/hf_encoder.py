"""Hugging Face transformer encoders (BERT family, MiniLM) with mean pooling."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.backbones.base import Backbone
from transferlab.errors import ConfigError


def resolve_model_location(model: str, local_package: str | None) -> str:
    """An existing local path wins, then a package that ships the weights, then the hub id."""
    if Path(model).exists():
        return model
    if local_package:
        try:
            module = __import__(local_package)
            return str(module.get_model_path())
        except ImportError:
            pass
    return model


def weights_fingerprint(location: str) -> str:
    """Hash of config + weight file sizes/heads: cheap, and changes whenever the weights do."""
    digest = hashlib.sha256(location.encode() if not Path(location).exists() else b"")
    root = Path(location)
    if root.is_dir():
        for f in sorted(root.glob("*.json")) + sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")):
            digest.update(f.name.encode())
            with f.open("rb") as fh:
                digest.update(fh.read(1 << 20))
            digest.update(str(f.stat().st_size).encode())
    return digest.hexdigest()[:16]


class HFEncoder(Backbone):
    """`transformers.AutoModel` + mean pooling over the attention mask (+ optional L2 norm)."""

    def __init__(self, location: str, max_length: int, pooling: str = "mean", normalize: bool = True):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if pooling != "mean":
            raise ConfigError(f"backbone.pooling={pooling!r}: only 'mean' is supported")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            self.model = AutoModel.from_pretrained(location)
        except OSError as exc:
            raise ConfigError(f"backbone.model={location!r}: cannot be loaded "
                              f"({str(exc).splitlines()[0]})") from None
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # mean pooling replaces it; unused weights would count as trainable
        self.max_length = max_length
        self.normalize = normalize
        self.feature_dim = int(self.model.config.hidden_size)
        self.fingerprint = weights_fingerprint(location)

    @classmethod
    def from_config(cls, cfg: Any) -> "HFEncoder":
        location = resolve_model_location(cfg.model, cfg.local_package)
        return cls(location, cfg.max_length, cfg.pooling, cfg.normalize)

    @classmethod
    def identity(cls, cfg: Any) -> dict:
        return {"weights": weights_fingerprint(resolve_model_location(cfg.model, cfg.local_package)),
                "max_length": cfg.max_length, "pooling": cfg.pooling, "normalize": cfg.normalize}

    def encode(self, items: list[str]) -> list[list[int]]:
        return self.tokenizer(list(items), truncation=True, max_length=self.max_length)["input_ids"]

    def collate(self, encoded: list[list[int]]) -> dict[str, torch.Tensor]:
        """Pads to the longest item of this batch, not to max_length."""
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, seq in enumerate(encoded):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def item_length(self, encoded_item: list[int]) -> int:
        return len(encoded_item)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        groups: list[tuple[str, nn.Module]] = [("embeddings", self.model.embeddings)]
        groups += [(f"block{i}", layer) for i, layer in enumerate(self.model.encoder.layer)]
        return groups
