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


def item_digest(item: object) -> bytes:
    """Identity of one input (a text, an image's bytes): what an embedding is stored under."""
    return hashlib.sha256(item if isinstance(item, bytes) else str(item).encode()).digest()[:16]


class FeatureCache:
    """Frozen-backbone features on disk, at two levels, every file written atomically.

    - An item store per backbone identity (`items/<backbone key>/`): the embedding of every input
      ever extracted with those weights and that preprocessing, keyed by the input's digest. Any
      split, subset or seed of the same data reuses it, so each input is embedded once.
    - Entries `<key>/<split>.safetensors` for one prepared data set, assembled from the store.

    Keys hash everything the embeddings depend on, so a hit can be trusted and a change upstream
    (weights, max_length, pooling, precision, data) is a miss. A file that fails to load
    (truncated, corrupt) counts as a miss and is rebuilt.
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

    def store(self, backbone_key: str) -> Path:
        return self.root / "items" / backbone_key

    def load_items(self, backbone_key: str) -> tuple[dict[bytes, int], torch.Tensor | None]:
        """(digest -> row, features) of the item store; empty when absent or unreadable."""
        path = self.store(backbone_key) / "features.safetensors"
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, KeyError):
            return {}, None
        digests = tensors["digests"].numpy()
        return {bytes(row): i for i, row in enumerate(digests)}, tensors["features"]

    def save_items(self, backbone_key: str, digests: list[bytes], features: torch.Tensor) -> None:
        path = self.store(backbone_key) / "features.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.uint8).reshape(len(digests), 16)
        with atomic_path(path) as tmp:
            save_file({"digests": rows, "features": features.contiguous()}, str(tmp))
