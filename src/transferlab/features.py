"""FeatureCache: frozen-backbone embeddings, computed once per (backbone, preprocessing, data content)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from transferlab.atomic import atomic_path
from transferlab.errors import DataError


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
    (weights, max_length, pooling, precision, data) is a miss. Every file carries the sha256 of
    its tensors; one that fails to load (truncated) or to match it (corrupt) counts as a miss and
    is rebuilt.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def lock(self, key: str) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{key}.lock"))

    def load(self, key: str, split: str) -> torch.Tensor | None:
        tensors = verified(self.entry(key) / f"{split}.safetensors")
        return None if tensors is None else tensors.get("features")

    def save(self, key: str, split: str, features: torch.Tensor, meta: dict) -> Path:
        path = self.entry(key) / f"{split}.safetensors"
        save_verifiable(path, {"features": features}, {k: str(v) for k, v in meta.items()})
        return path

    def copy_entry(self, key: str, to: FeatureCache) -> Path:
        """Entry `key` copied into another cache (dvc's artifacts/features), whole or not at all."""
        with atomic_path(to.entry(key)) as tmp:
            shutil.copytree(self.entry(key), tmp)
        return to.entry(key)

    def store(self, backbone_key: str) -> Path:
        return self.root / "items" / backbone_key

    def load_items(self, backbone_key: str) -> tuple[dict[bytes, int], torch.Tensor | None]:
        """(digest -> row, features) of the item store; empty when absent or unreadable."""
        tensors = verified(self.store(backbone_key) / "features.safetensors")
        if tensors is None or not {"digests", "features"} <= tensors.keys():
            return {}, None
        digests = tensors["digests"].numpy()
        return {bytes(row): i for i, row in enumerate(digests)}, tensors["features"]

    def save_items(self, backbone_key: str, digests: list[bytes], features: torch.Tensor) -> None:
        rows = torch.frombuffer(bytearray(b"".join(digests)), dtype=torch.uint8).reshape(len(digests), 16)
        save_verifiable(self.store(backbone_key) / "features.safetensors", {"digests": rows, "features": features})


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, shape, dtype and bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_verifiable(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically, with the tensors' sha256 in the header, so a later read can tell rot from data."""
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={**(metadata or {}), "sha256": tensor_digest(tensors)})


def verified(path: Path) -> dict[str, torch.Tensor] | None:
    """The file's tensors, or None when it is absent, unreadable (truncated) or its bytes no longer
    match the sha256 written with them (a flipped bit the safetensors format itself cannot see).
    None is a cache miss: the entry is rebuilt, never trusted. Files written before checksums
    existed carry none and are accepted on the format's own checks."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            expected = (f.metadata() or {}).get("sha256")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None
    if expected is not None and tensor_digest(tensors) != expected:
        return None
    return tensors


def load_features(entry: str | Path, split: str) -> torch.Tensor:
    """One split's features from a cache entry, verified against its sha256 on every load: a
    damaged file stops the run in one line instead of training on it."""
    path = Path(entry) / f"{split}.safetensors"
    tensors = verified(path)
    if tensors is None or "features" not in tensors:
        raise DataError(f"{path}: features missing or damaged; run extract again to rebuild them")
    return tensors["features"]
