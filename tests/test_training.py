"""Real Lightning fits through transferlab.pipeline (conftest's run_cell): what a run trains, what it
reaches, and that its folder rebuilds into the model that made its predictions.

Logic runs on the tiny randomly initialised encoder (tests/tiny_encoder.py, the real hf_encoder
code path); what needs a real model's quality runs on MiniLM (`tiny=False`)."""

from __future__ import annotations

import json
import os
import warnings

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from transferlab.backbones import build_backbone
from transferlab.config import checked, compose

from conftest import prepared_dir, run_cell, QUICK_BUDGET, topic_config

METRIC_KEYS = {"strategy", "train_size", "test_accuracy", "test_macro_f1", "train_accuracy",
               "val_accuracy", "trainable_params", "total_params", "train_seconds", "peak_memory_mb"}
TOPIC_LABELS = ["business", "sport", "tech"]


def size(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_linear_probe_trains_only_the_head(tmp_path):
    """Frozen MiniLM + a linear head on three topics, end to end."""
    cfg = topic_config(tmp_path, "strategy=linear_probe", "strategy.max_epochs=30", tiny=False)
    metrics = run_cell(cfg, tmp_path / "run")
    backbone = build_backbone(cfg.backbone)
    head = backbone.feature_dim * len(TOPIC_LABELS) + len(TOPIC_LABELS)
    assert metrics["trainable_params"] == head
    assert metrics["total_params"] == size(backbone) + head
    assert set(load_file(tmp_path / "run" / "model.safetensors")) == {"head.weight", "head.bias"}
    assert METRIC_KEYS <= set(metrics)
    assert metrics["test_accuracy"] >= 0.9  # three well-separated topics
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == metrics
    report = json.loads((tmp_path / "run" / "classification_report.json").read_text())
    assert report["confusion_matrix"]["labels"] == TOPIC_LABELS
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == report["per_class"]["macro avg"]["support"]


def test_finetune_full_trains_every_parameter(tmp_path):
    cfg = topic_config(tmp_path, "strategy=finetune_full", "strategy.max_epochs=2", *QUICK_BUDGET, "strategy.patience=5")
    metrics = run_cell(cfg, tmp_path / "run")
    pretrained = build_backbone(cfg.backbone)
    assert metrics["trainable_params"] == metrics["total_params"]
    assert metrics["total_params"] == size(pretrained) + pretrained.feature_dim * 3 + 3
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # resumable after every epoch
    tuned = load_file(tmp_path / "run" / "model.safetensors")
    unchanged = [name for name, weight in pretrained.state_dict().items()
                 if torch.equal(tuned[f"backbone.{name}"], weight)]
    assert unchanged == []  # the whole backbone really trained
    assert metrics["epochs"] == 2


@pytest.mark.slow
def test_linear_probe_on_200_bbc_articles_reaches_90_percent(tmp_path):
    """The seed's sanity reference: frozen MiniLM + a linear head on BBC News, 200 labels."""
    cfg = checked(compose(["data=bbc_news", "data.train_size=200", "data.val_fraction=0.05",
                           "data.test_fraction=0.1", "trainer.enable_progress_bar=false",
                           f"paths.cache_dir={tmp_path / 'cache'}"]), "test")
    metrics = run_cell(cfg, tmp_path / "run")
    assert metrics["train_size"] == 200
    assert metrics["test_accuracy"] >= 0.90, metrics


@pytest.mark.parametrize("strategy", ["linear_probe", "lora"])
def test_predict_on_a_reloaded_run_equals_its_test_predictions(tmp_path, strategy):
    """`transferlab predict` rebuilds the run from its folder alone (head or LoRA adapters + head)."""
    from transferlab.cli import main

    cfg = topic_config(tmp_path, f"strategy={strategy}", "strategy.max_epochs=2", *QUICK_BUDGET)
    run_cell(cfg, tmp_path / "run")
    test = pd.read_parquet(prepared_dir(cfg) / "test.parquet")
    test.to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.csv")]) == 0
    ours, theirs = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(ours) == len(test) > 0
    assert ours["predicted"].tolist() == theirs["predicted"].tolist()
    probs = [c for c in theirs.columns if c.startswith("p_")]
    assert probs == [f"p_{n}" for n in TOPIC_LABELS]
    assert (ours[probs] - theirs[probs]).abs().max().max() < 1e-4


def test_export_merges_lora_and_traces_to_torchscript(tmp_path):
    """The exported TorchScript model gives the run's own logits, with LoRA folded into the weights."""
    from transferlab.cli import main
    from transferlab.export import serving_model

    # fp32 throughout: the TorchScript trace is fp32, and equality to 1e-4 is about the weights
    cfg = topic_config(tmp_path, "strategy=lora", "strategy.max_epochs=1", "trainer.precision=32-true", *QUICK_BUDGET)
    run_cell(cfg, tmp_path / "run")
    pd.read_parquet(prepared_dir(cfg) / "test.parquet").to_csv(tmp_path / "x.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["export", str(tmp_path / "run"), str(tmp_path / "export"), "--example", str(tmp_path / "x.csv")]) == 0
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]  # export checks the trace
    umask = os.umask(0o022)
    os.umask(umask)
    written = [*(tmp_path / "export").iterdir(), tmp_path / "run" / "model.safetensors"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(0o666 & ~umask) for p in written}
    info = json.loads((tmp_path / "export" / "config.json").read_text())
    assert info["torchscript"] == "model.torchscript.pt" and info["labels"] == TOPIC_LABELS
    exported = load_file(tmp_path / "export" / "model.safetensors")
    assert not any("lora_" in k for k in exported)
    # folded in, not dropped: the adapted projections differ from the pre-trained ones
    pretrained = build_backbone(cfg.backbone).state_dict()
    query = "model.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(exported[f"backbone.{query}"], pretrained[query])
    model, _ = serving_model(tmp_path / "run")
    texts = pd.read_csv(tmp_path / "x.csv")["text"].tolist()
    batch = model.backbone.preprocess(texts)
    traced = torch.jit.load(str(tmp_path / "export" / "model.torchscript.pt"))
    with torch.no_grad():
        logits = traced(*batch.values())
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert [info["labels"][i] for i in logits.argmax(-1)] == predictions["predicted"].tolist()
    probs = torch.softmax(logits, -1).numpy()
    assert abs(probs - predictions[[f"p_{n}" for n in TOPIC_LABELS]].to_numpy()).max() < 1e-4


@pytest.mark.parametrize("limit", [1e-3, 1e6], ids=["clipped", "below-the-limit"])
def test_gradient_clipping_scales_as_clip_grad_norm_does(tmp_path, limit):
    """The fine-tuning module's clipping (which skips the scaling pass when the norm is below the
    limit) leaves the same gradients as torch's clip_grad_norm_."""
    import lightning.pytorch as L

    from transferlab.models import build

    module = build(topic_config(tmp_path, "strategy=finetune_full"), len(TOPIC_LABELS))
    module.trainer = L.Trainer(accelerator="cpu", precision="32-true", logger=False)
    optimizer = torch.optim.AdamW(module.parameters())
    torch.manual_seed(0)
    for p in module.parameters():
        p.grad = torch.randn_like(p)
    reference = [torch.nn.Parameter(p.detach().clone()) for p in module.parameters()]
    for r, p in zip(reference, module.parameters()):
        r.grad = p.grad.clone()
    torch.nn.utils.clip_grad_norm_(reference, limit)
    module.configure_gradient_clipping(optimizer, limit, "norm")
    assert all(torch.equal(p.grad, r.grad) for p, r in zip(module.parameters(), reference))
    total = torch.nn.utils.get_total_norm([p.grad for p in module.parameters()]).item()
    assert (total <= limit * 1.0001) if limit < 1 else (total > 1.0)  # clipped / left as it was
