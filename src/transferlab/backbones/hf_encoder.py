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

RANDOM_INIT_SEED = 0  # pretrained=false builds the same randomly initialised network every time


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

    lora_targets = ("query", "value")  # BERT-family attention projections

    def __init__(self, location: str, max_length: int, pooling: str = "mean", normalize: bool = True,
                 pretrained: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from transferlab.backbones.fast_dropout import use_fast_dropout

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if pooling != "mean":
            raise ConfigError(f"backbone.pooling={pooling!r}: only 'mean' is supported")
        if not max_length or max_length <= 0:
            raise ConfigError(f"backbone.max_length={max_length!r}: a text backbone needs a token count > 0")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            if pretrained:
                self.model = AutoModel.from_pretrained(location)
            else:  # the same architecture, randomly initialised: the baseline pre-training is measured against
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(RANDOM_INIT_SEED)
                    self.model = AutoModel.from_config(AutoConfig.from_pretrained(location))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"backbone.model={location!r}: cannot be loaded "
                              f"({str(exc).splitlines()[0]})") from None
        limit = position_limit(self.model)
        if limit is not None and max_length > limit:
            raise ConfigError(f"backbone.max_length={max_length}: the model at {location} has positions for "
                              f"{limit} tokens; set backbone.max_length <= {limit}")
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # mean pooling replaces it; unused weights would count as trainable
        use_fast_dropout(self.model)  # fine-tuning only; inference is unchanged
        self.max_length = max_length
        self.normalize = normalize
        self.feature_dim = int(self.model.config.hidden_size)
        self.fingerprint = weights_fingerprint(location) if pretrained else f"random-{RANDOM_INIT_SEED}"

    @classmethod
    def from_config(cls, cfg: Any) -> "HFEncoder":
        location = resolve_model_location(cfg.model, cfg.local_package)
        return cls(location, cfg.max_length, cfg.pooling, cfg.normalize, cfg.get("pretrained", True))

    @classmethod
    def identity(cls, cfg: Any) -> dict:
        identity = {"weights": weights_fingerprint(resolve_model_location(cfg.model, cfg.local_package)),
                    "max_length": cfg.max_length, "pooling": cfg.pooling, "normalize": cfg.normalize}
        if not cfg.get("pretrained", True):  # only when set, so caches of pretrained features stay valid
            identity["pretrained"] = False
        return identity

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
        """embeddings, block0 … blockN-1, and `final` when weights follow the blocks (a final norm)."""
        return transformer_layer_groups(self.model)


def position_limit(model: nn.Module) -> int | None:
    """The most tokens (special tokens included) the model has learned positions for; None when its
    config declares no `max_position_embeddings` (relative positions only, as T5's encoder).

    Read off the model, not the tokenizer: a tokenizer saved without `model_max_length` reports
    about 1e30, and a longer sequence fails deep in the forward pass (index out of range in the
    position table, or a token-type buffer of that size). RoBERTa-style embeddings (RoBERTa,
    XLM-R, MPNet, ...) number positions from `padding_idx + 1`, so their table of 514 holds 512
    tokens: such a model's position table carries that `padding_idx`, which BERT's does not.
    """
    table = getattr(model.config, "max_position_embeddings", None)
    if table is None:
        return None
    positions = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
    padding_idx = getattr(positions, "padding_idx", None)
    return int(table) - (padding_idx + 1 if padding_idx is not None else 0)


def transformer_layer_groups(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layer groups of any `transformers` encoder, found from its structure rather than its family.

    The blocks are the ModuleList of `config.num_hidden_layers` layers (BERT's `encoder.layer`,
    DistilBERT's `transformer.layer`, GPT-2's `h`, ModernBERT's `layers`). Along the path from the
    root to that list, the modules registered before it form `embeddings` and those after it
    `final`, so every weight lands in exactly one group.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under PEFT
    path, blocks = block_list(base)
    before: list[nn.Module] = []
    after: list[nn.Module] = []
    owner = base
    for step in path:
        children = list(owner.named_children())
        at = [name for name, _ in children].index(step)
        before += [m for _, m in children[:at]]
        after += [m for _, m in children[at + 1:]]
        owner = getattr(owner, step)
    embeddings = getattr(base, "embeddings", None)
    groups: list[tuple[str, nn.Module]] = [
        ("embeddings", embeddings if before == [embeddings] else nn.ModuleList(before))]
    groups += [(f"block{i}", layer) for i, layer in enumerate(blocks)]
    if any(True for m in after for _ in m.parameters()):
        groups.append(("final", nn.ModuleList(after)))
    return groups


def block_list(model: nn.Module) -> tuple[list[str], nn.ModuleList]:
    """The attribute path to, and the ModuleList of, the model's transformer blocks."""
    depth = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) > 0
                  and (depth is None or len(module) == depth)]
    if not candidates:
        raise ConfigError(f"{type(model).__name__}: no list of {depth or 'transformer'} blocks found "
                          "to form layer groups")
    name, blocks = max(candidates, key=lambda c: sum(p.numel() for p in c[1].parameters()))
    return name.split("."), blocks
