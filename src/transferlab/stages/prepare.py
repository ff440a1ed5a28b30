"""Stage `prepare`: raw data -> cleaned, stratified train/val/test Parquet, label map, data card."""

from __future__ import annotations

import json
from pathlib import Path

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from transferlab.atomic import atomic_path
from transferlab.data import sources
from transferlab.data.splits import Splits, data_card, split
from transferlab.features import content_key
from transferlab.provenance import code_version


def run(data: DictConfig, seed: int, out_dir: str | Path) -> Path:
    """Writes the whole directory at once (temp dir + rename): complete or absent."""
    return write(split(sources.load(data), data, seed), out_dir)


def write(splits: Splits, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, frame in splits.frames.items():
            sources.storable(frame).to_parquet(tmp / f"{name}.parquet", index=False)
        (tmp / "labels.json").write_text(json.dumps(splits.labels, indent=2) + "\n")
        (tmp / "data_card.json").write_text(json.dumps(data_card(splits), indent=2) + "\n")
    return out_dir


def cache_dir(data: DictConfig, seed: int, cache_root: str | Path) -> Path:
    """Content-addressed location: the config that shapes the splits, the raw data's hash and the
    version of the code that splits it (a fix to splitting is a miss, never a stale hit)."""
    key = content_key(data=OmegaConf.to_container(data), seed=seed, content=sources.fingerprint(data),
                      code=code_version(__name__))
    return Path(cache_root) / "prepared" / key


def cached(data: DictConfig, seed: int, cache_root: str | Path) -> Path:
    """The prepared splits from the content-addressed cache, preparing them on a miss.

    A file lock per entry: two flows starting at once on one cache prepare it once, and neither
    can swap the directory while the other is reading it."""
    out_dir = cache_dir(data, seed, cache_root)
    if (out_dir / "data_card.json").is_file():
        return out_dir
    splits = split(sources.load(data), data, seed)  # bad data stops here, before the cache is touched
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir.parent / f"{out_dir.name}.lock")):
        return out_dir if (out_dir / "data_card.json").is_file() else write(splits, out_dir)
