"""FeatureCache: frozen-backbone embeddings, computed once per (backbone, preprocessing, data content)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from transferlab.atomic import atomic_path


def content_key(**parts: object) -> str:
    """A short stable hash of everything an artifact depends on: its content address."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class FeatureCache:
    """A directory of `<key>/<split>.safetensors` entries, each written atomically.

    The key hashes everything the embeddings depend on, so a hit can be trusted and a
    change anywhere upstream (weights, max_length, pooling, precision, data) is a miss.
    An entry that fails to load (truncated, corrupt) counts as a miss and is rebuilt.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def lock(self, key: str) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{key}.lock"))

    def load(self, key: str, split: str) -> torch.Tensor | None:
        path = self.entry(key) / f"{split}.safetensors"
        if not path.is_file():
            return None
        try:
            return load_file(path)["features"]
        except (SafetensorError, OSError, KeyError):
            return None

    def save(self, key: str, split: str, features: torch.Tensor, meta: dict) -> Path:
        path = self.entry(key) / f"{split}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"features": features.contiguous()}, str(tmp),
                      metadata={k: str(v) for k, v in meta.items()})
        return path
