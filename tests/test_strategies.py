"""Every strategy, through the layer-group interface: what trains is what the config declares."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from transferlab.config import checked, compose
from transferlab.lora import merged
from transferlab.modules import FinetuneClassifier
from transferlab.stages import finetune, train_head
from transferlab.strategies import declared_trainable_groups, param_groups

from test_training import run_pipeline, topic_config

STRATEGIES = ["linear_probe", "mlp_head", "finetune_full", "finetune_last_n", "llrd",
              "gradual_unfreeze", "lp_ft", "lora"]


def strategy_cfg(tmp_path, name, *overrides):
    return topic_config(tmp_path, f"strategy={name}", "strategy.max_epochs=1", *overrides)


def assert_trains_what_it_declares(module: FinetuneClassifier, strategy) -> None:
    groups = module.backbone.layer_groups()
    declared = declared_trainable_groups([n for n, _ in groups], strategy)
    for name, group in groups:
        flags = {n: p.requires_grad for n, p in group.named_parameters()}
        if strategy.trainable == "lora":
            assert all(flag == ("lora_" in n) for n, flag in flags.items()), name
        else:
            assert set(flags.values()) == {name in declared}, name
    assert all(p.requires_grad for p in module.head.parameters())


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_trains_one_epoch_and_declares_its_trainable_set(tmp_path, name):
    # one fine-tuning case under CPU bf16 autocast (emulated on CPUs without AVX512-BF16: slow)
    cfg = strategy_cfg(tmp_path, name, *(["trainer.precision=bf16-mixed"] if name == "finetune_last_n" else []))
    metrics = run_pipeline(cfg, tmp_path)
    assert metrics["strategy"] == name and 0 <= metrics["test_accuracy"] <= 1
    if cfg.strategy.kind == "finetune":
        assert_trains_what_it_declares(finetune.build_module(cfg, 3), cfg.strategy)
    else:
        head = train_head.build_module(cfg, 384, 3).head
        expected = 384 * 3 + 3 if name == "linear_probe" else 384 * 256 + 256 + 256 * 3 + 3
        assert metrics["trainable_params"] == sum(p.numel() for p in head.parameters()) == expected


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_trains_one_epoch_on_a_vision_backbone(tmp_path, name):
    """The same strategy code on EfficientNet-Lite0's groups (stem, block0-6, head) and MNIST."""
    cfg = checked(compose(["data=mnist", "data.limit=120", "backbone=efficientnet_lite0", "backbone.image_size=32",
                           f"strategy={name}", "strategy.max_epochs=1", "strategy.probe.max_epochs=5",
                           "trainer.enable_progress_bar=false"]), "test")
    metrics = run_pipeline(cfg, tmp_path)
    assert metrics["strategy"] == name and metrics["train_size"] > 0
    if cfg.strategy.kind == "finetune":
        module = finetune.build_module(cfg, 10)
        assert_trains_what_it_declares(module, cfg.strategy)
        frozen_norms = [m for _, g in module.backbone.layer_groups() for m in g.modules()
                        if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters())]
        module.train()
        assert all(not m.training for m in frozen_norms)  # frozen BatchNorm keeps its statistics


def test_last_n_trains_exactly_the_top_groups(tmp_path):
    cfg = strategy_cfg(tmp_path, "finetune_last_n", "strategy.last_n=3")
    module = finetune.build_module(cfg, 3)
    trainable = [n for n, g in module.backbone.layer_groups() if any(p.requires_grad for p in g.parameters())]
    assert trainable == ["block3", "block4", "block5"]


def test_llrd_groups_carry_decayed_learning_rates(tmp_path):
    cfg = strategy_cfg(tmp_path, "llrd", "strategy.layer_decay=0.5", "strategy.lr=0.001")
    module = finetune.build_module(cfg, 3)
    lrs = {g["name"]: g["lr"] for g in param_groups(module.backbone, module.head, cfg.strategy)}
    assert lrs == {"embeddings": 0.001 * 0.5 ** 6, **{f"block{i}": 0.001 * 0.5 ** (5 - i) for i in range(6)},
                   "head": cfg.strategy.head_lr}


def test_gradual_unfreezing_grows_at_the_scheduled_epochs(tmp_path):
    cfg = strategy_cfg(tmp_path, "gradual_unfreeze", "strategy.max_epochs=4", "strategy.unfreeze_every=2",
                       "strategy.patience=10")
    run_pipeline(cfg, tmp_path)
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv").dropna(subset=["trainable_params"])
    counts = dict(zip(log["epoch"], log["trainable_params"].astype(int)))
    module = finetune.build_module(cfg, 3)
    sizes = {n: sum(p.numel() for p in g.parameters()) for n, g in module.backbone.layer_groups()}
    head = 384 * 3 + 3
    assert counts == {0: head, 1: head, 2: head + sizes["block5"], 3: head + sizes["block5"]}


def test_lora_is_small_and_its_saved_adapters_and_head_reload_identically(tmp_path):
    cfg = strategy_cfg(tmp_path, "lora")
    metrics = run_pipeline(cfg, tmp_path)
    assert metrics["trainable_params"] < 0.02 * metrics["total_params"]
    saved = load_file(tmp_path / "run" / "model.safetensors")
    reloaded = finetune.build_module(cfg, 3)
    reloaded.load_state_dict(saved)
    reloaded.eval()
    texts = pd.read_parquet(tmp_path / "data" / "test.parquet")["text"].tolist()
    batch = reloaded.backbone.preprocess(texts)
    with torch.no_grad():
        logits = reloaded.head(reloaded.backbone(**batch))
        merged_logits = merged(reloaded).head(merged(reloaded).backbone(**batch))
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    names = sorted(["business", "sport", "tech"])
    assert [names[i] for i in logits.argmax(-1)] == predictions["predicted"].tolist()
    probs = torch.softmax(logits, -1)[:, 0].numpy()
    assert abs(probs - predictions["p_business"].to_numpy()).max() < 1e-4
    assert torch.allclose(merged_logits, logits, atol=1e-4)
    assert not any("lora_" in k for k in merged(reloaded).state_dict())


def test_lp_ft_starts_from_the_converged_probe(tmp_path):
    cfg = strategy_cfg(tmp_path, "lp_ft")
    metrics = run_pipeline(cfg, tmp_path)
    probe = load_file(tmp_path / "run" / "probe" / "model.safetensors")
    assert set(probe) == {"head.weight", "head.bias"}
    assert metrics["trainable_params"] == metrics["total_params"]
