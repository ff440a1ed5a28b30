"""Stage `extract`: the frozen backbone embeds every split once, into the FeatureCache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.atomic import write_json
from transferlab.backbones import backbone_class
from transferlab.data.datamodules import read_split, split_file
from transferlab.data.splits import SPLITS
from transferlab.features import FeatureCache, content_key, item_digest
from transferlab.inference import embed
from transferlab.provenance import code_version


def data_hash(data_dir: Path) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(split_file(data_dir, split).read_bytes())
    return digest.hexdigest()[:16]


def backbone_key(backbone: DictConfig, extract: DictConfig) -> str:
    """The item store's key: weights + preprocessing, precision, and the version of the code that
    embeds (pooling, tokenising, the libraries), so a fix there is a miss, never a stale hit."""
    return content_key(backbone=backbone_class(backbone).identity(backbone), name=backbone.name,
                       precision=extract.precision, code=code_version(__name__))


def features_root(cache_root: str | Path) -> Path:
    """Where paths.cache_dir keeps features: the item stores and entries every front end shares."""
    return Path(cache_root) / "features"


def cache_key(backbone: DictConfig, extract: DictConfig, data_dir: Path) -> str:
    return content_key(store=backbone_key(backbone, extract), data=data_hash(data_dir))


def update_store(cache: FeatureCache, store_key: str, backbone: DictConfig, extract: DictConfig,
                 items: list, progress: bool) -> tuple[dict[bytes, int], torch.Tensor, dict]:
    """Embed only the items the store lacks; returns the store's index, features and facts.

    The store keeps its cumulative embedding time and item count, so the cost of extraction is
    known (`seconds_per_item`) even when a later run finds every item cached."""
    with cache.lock(f"items-{store_key}"):
        index, features = cache.load_items(store_key)
        facts_path = cache.store(store_key) / "meta.json"
        known = json.loads(facts_path.read_text()) if facts_path.is_file() and features is not None else {}
        missing = {item_digest(x): x for x in items if item_digest(x) not in index}
        if not missing and known:
            return index, features, {**known, "extract_seconds": 0.0, "items_embedded": 0}
        new, facts = embed(backbone, extract, list(missing.values()), progress)
        seconds = facts.pop("embed_seconds")
        digests = [d for d, _ in sorted(index.items(), key=lambda kv: kv[1])] + list(missing)
        features = new if features is None else torch.cat([features, new])
        cache.save_items(store_key, digests, features)
        total_seconds = known.get("total_seconds", 0.0) + seconds
        # rows are appended batch by batch: each batch's own rate prices the items it embedded
        batches = known.get("batches", []) + [{"rows": [len(index), len(digests)],
                                               "seconds_per_item": seconds / len(missing)}]
        facts.update(extract_seconds=round(seconds, 3), items_embedded=len(missing), batches=batches,
                     total_seconds=round(total_seconds, 3), seconds_per_item=total_seconds / len(digests))
        write_json(facts_path, facts)
        return {d: i for i, d in enumerate(digests)}, features, facts


def amortised_seconds(backbone: DictConfig, extract: DictConfig, data_dirs: list[Path],
                      cache_root: str | Path) -> float | None:
    """What embedding every distinct input of `data_dirs` once costs, at the rate the store measured:
    the same figure whether this comparison found the cache cold or warm. None where it cannot be
    known here (the store never measured a rate, or a data dir's splits are gone): a cache that is
    absent (a fresh clone, a queued experiment's copy) is not an extraction that cost 0 s."""
    facts_path = FeatureCache(cache_root).store(backbone_key(backbone, extract)) / "meta.json"
    if not facts_path.is_file() or not all(split_file(d, s).is_file() for d in set(data_dirs) for s in SPLITS):
        return None
    column = backbone_class(backbone).input_column
    distinct = {item_digest(x) for d in set(data_dirs) for s in SPLITS for x in read_split(d, s)[column]}
    return round(len(distinct) * json.loads(facts_path.read_text())["seconds_per_item"], 3)


def known_batches(cache: FeatureCache, store_key: str) -> list[dict]:
    facts_path = cache.store(store_key) / "meta.json"
    return json.loads(facts_path.read_text()).get("batches", []) if facts_path.is_file() else []


def entry_rate(facts: dict, batches: list[dict], rows: torch.Tensor) -> float:
    """Seconds per item of this data's own items, at the rates the batches that embedded them
    measured: the extraction rate of this backbone on this data set, not on everything it embedded
    (a store from before batches were kept: its average rate)."""
    if not batches:
        return facts.get("seconds_per_item", 0.0)
    rate = torch.zeros(int(rows.max()) + 1 if len(rows) else 0, dtype=torch.float64)
    for batch in batches:
        start, end = batch["rows"]
        rate[start:min(end, len(rate))] = batch["seconds_per_item"]
    return float(rate[rows.unique()].mean())


def run(backbone: DictConfig, extract: DictConfig, data_dir: str | Path, cache_root: str | Path,
        progress: bool = True) -> Path:
    """Returns the entry holding `<split>.safetensors` + meta.json; inputs already embedded with
    this backbone (by any earlier split, subset or seed) are looked up, not recomputed. `progress`:
    a bar while embedding (trainer.enable_progress_bar); it changes nothing else."""
    data_dir, cache = Path(data_dir), FeatureCache(cache_root)
    key = cache_key(backbone, extract, data_dir)
    with cache.lock(key):
        if all(cache.load(key, s) is not None for s in SPLITS) and (cache.entry(key) / "meta.json").is_file():
            return cache.entry(key)
        column = backbone_class(backbone).input_column
        items = {s: read_split(data_dir, s)[column].tolist() for s in SPLITS}
        store_key = backbone_key(backbone, extract)
        index, features, facts = update_store(cache, store_key, backbone, extract,
                                              [x for s in SPLITS for x in items[s]], progress)
        rows = {s: torch.tensor([index[item_digest(x)] for x in items[s]], dtype=torch.long) for s in SPLITS}
        for split in SPLITS:
            cache.save(key, split, features[rows[split]], {"split": split})
        facts = {k: v for k, v in facts.items() if k != "batches"}
        write_json(cache.entry(key) / "meta.json",
                   {"backbone": OmegaConf.to_container(backbone), "precision": extract.precision,
                    "store": store_key, **facts, "seconds_per_item": entry_rate(facts, known_batches(cache, store_key),
                                                                                torch.cat(list(rows.values())))})
    return cache.entry(key)
