"""Real Lightning fits through the stage functions: what each strategy trains, and what it reaches."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from transferlab.backbones import build_backbone
from transferlab.config import checked, compose
from transferlab.stages import evaluate, extract, prepare, train
from transferlab.strategies import needs_features

from conftest import topic_frame

METRIC_KEYS = {"strategy", "train_size", "test_accuracy", "test_macro_f1", "train_accuracy",
               "val_accuracy", "trainable_params", "total_params", "train_seconds", "peak_memory_mb"}


def topic_config(root, *overrides):
    topic_frame().to_csv(root / "topics.csv", index=False)
    return checked(compose(["data=csv", f"data.path={root / 'topics.csv'}", "data.label_column=topic",
                            "backbone.max_length=32", "trainer.enable_progress_bar=false",
                            *overrides]), "test")


def run_pipeline(cfg, root):
    data = prepare.run(cfg.data, cfg.seed, root / "data")
    features = extract.run(cfg.backbone, cfg.extract, data, root / "features") \
        if needs_features(cfg.strategy) else None
    train.run(cfg, data, features, root / "run")
    return evaluate.run(cfg, data, features, root / "run", root / "run")


def test_linear_probe_trains_only_the_head(tmp_path):
    cfg = topic_config(tmp_path, "strategy=linear_probe", "strategy.max_epochs=30")
    metrics = run_pipeline(cfg, tmp_path)
    backbone_params = sum(p.numel() for p in build_backbone(cfg.backbone).parameters())
    assert metrics["trainable_params"] == 384 * 3 + 3
    assert metrics["total_params"] == backbone_params + 384 * 3 + 3
    assert set(load_file(tmp_path / "run" / "model.safetensors")) == {"head.weight", "head.bias"}
    assert METRIC_KEYS <= set(metrics)
    assert metrics["test_accuracy"] >= 0.9  # three well-separated topics
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == metrics
    report = json.loads((tmp_path / "run" / "classification_report.json").read_text())
    assert report["confusion_matrix"]["labels"] == ["business", "sport", "tech"]
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == report["per_class"]["macro avg"]["support"]


def test_finetune_full_trains_every_parameter(tmp_path):
    cfg = topic_config(tmp_path, "strategy=finetune_full", "strategy.max_epochs=2", "strategy.patience=5")
    metrics = run_pipeline(cfg, tmp_path)
    assert metrics["trainable_params"] == metrics["total_params"]
    assert metrics["total_params"] == sum(p.numel() for p in build_backbone(cfg.backbone).parameters()) + 384 * 3 + 3
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # resumable after every epoch
    tuned = load_file(tmp_path / "run" / "model.safetensors")
    pretrained = build_backbone(cfg.backbone).state_dict()
    name = "model.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(tuned[f"backbone.{name}"], pretrained[name])  # the backbone really trained
    assert metrics["epochs"] == 2


@pytest.mark.slow
def test_linear_probe_on_200_bbc_articles_reaches_90_percent(tmp_path):
    """The seed's sanity reference: frozen MiniLM + a linear head on BBC News, 200 labels."""
    cfg = checked(compose(["data=bbc_news", "data.train_size=200", "data.val_fraction=0.05",
                           "data.test_fraction=0.1", "trainer.enable_progress_bar=false"]), "test")
    metrics = run_pipeline(cfg, tmp_path)
    assert metrics["train_size"] == 200
    assert metrics["test_accuracy"] >= 0.90, metrics


@pytest.mark.parametrize("strategy", ["linear_probe", "lora"])
def test_predict_on_a_reloaded_run_equals_its_test_predictions(tmp_path, strategy):
    """`transferlab predict` rebuilds the run from its folder alone (head or LoRA adapters + head)."""
    cfg = topic_config(tmp_path, f"strategy={strategy}", "strategy.max_epochs=2")
    run_pipeline(cfg, tmp_path)
    import pandas as pd

    from transferlab.cli import main

    test = pd.read_parquet(tmp_path / "data" / "test.parquet")
    test.to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "new.csv"), "-o", str(tmp_path / "p.csv")]) == 0
    ours, theirs = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert ours["predicted"].tolist() == theirs["predicted"].tolist()
    probs = [c for c in theirs.columns if c.startswith("p_")]
    assert (ours[probs] - theirs[probs]).abs().max().max() < 1e-4


def test_export_merges_lora_and_traces_to_torchscript(tmp_path):
    """The exported TorchScript model gives the run's own logits, with LoRA folded into the weights."""
    cfg = topic_config(tmp_path, "strategy=lora", "strategy.max_epochs=1")
    run_pipeline(cfg, tmp_path)
    import pandas as pd

    from transferlab.cli import main
    from transferlab.export import serving_model

    pd.read_parquet(tmp_path / "data" / "test.parquet").to_csv(tmp_path / "x.csv", index=False)
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "export"), "--example", str(tmp_path / "x.csv")]) == 0
    info = json.loads((tmp_path / "export" / "config.json").read_text())
    assert info["torchscript"] == "model.torchscript.pt" and info["labels"] == ["business", "sport", "tech"]
    assert not any("lora_" in k for k in load_file(tmp_path / "export" / "model.safetensors"))
    model, _ = serving_model(tmp_path / "run")
    texts = pd.read_csv(tmp_path / "x.csv")["text"].tolist()
    batch = model.backbone.preprocess(texts)
    traced = torch.jit.load(str(tmp_path / "export" / "model.torchscript.pt"))
    with torch.no_grad():
        predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")["predicted"].tolist()
        logits = traced(*batch.values())
    assert [info["labels"][i] for i in logits.argmax(-1)] == predictions
