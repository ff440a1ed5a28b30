"""Stage `evaluate`: the trained model on train/val/test -> metrics.json, per-class report, predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from transferlab.atomic import atomic_path, write_json
from transferlab.data.datamodules import (FeatureDataModule, InputDataModule, in_row_order, labels_of,
                                          read_split)
from transferlab.data.splits import SPLITS
from transferlab.stages import artifact_dirs, finetune, train_head
from transferlab.stages.train import features_entry
from transferlab.trainer import predict_logits


def split_logits(cfg: DictConfig, card: dict, data_dir: Path, features_dir: Path | None,
                 model_dir: Path) -> dict[str, torch.Tensor]:
    """Logits per split, in the split's row order."""
    weights = load_file(model_dir / "model.safetensors")
    if card["kind"] == "head":
        module = train_head.build_module(cfg, card["feature_dim"], len(card["labels"]))
        module.load_state_dict(weights)
        datamodule = FeatureDataModule({s: train_head.load_features(features_dir, s) for s in SPLITS},
                                       {s: labels_of(data_dir, s) for s in SPLITS}, 1024)
        return {s: predict_logits(module, datamodule.loader(s), cfg) for s in SPLITS}
    module = finetune.build_module(cfg, len(card["labels"]))
    module.load_state_dict(weights)
    datamodule = InputDataModule(data_dir, module.backbone, cfg.strategy.batch_size)
    loaders = {s: datamodule.loader(s) for s in SPLITS}
    return {s: in_row_order(predict_logits(module, loader, cfg), loader) for s, loader in loaders.items()}


def identify_rows(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """What predictions.csv shows of each input: the text itself; for an image, where it came from
    (its file or data-set name, else its row number), never its bytes."""
    if "text" in frame.columns:
        return {"text": frame["text"]}
    return {"image": frame["name"] if "name" in frame.columns else pd.Series(range(len(frame)))}


def run(cfg: DictConfig, data_dir: str | Path, features_dir: str | Path | None,
        model_dir: str | Path, out_dir: str | Path) -> dict:
    data_dir, model_dir, out_dir = Path(data_dir), Path(model_dir), Path(out_dir)
    card = json.loads((model_dir / "model.json").read_text())
    logits = split_logits(cfg, card, data_dir, Path(features_dir) if features_dir else None, model_dir)
    truth = {s: labels_of(data_dir, s).numpy() for s in SPLITS}
    pred = {s: logits[s].argmax(-1).numpy() for s in SPLITS}
    names, ids = card["labels"], list(range(len(card["labels"])))
    metrics = {
        "strategy": card["strategy"],
        "kind": card["kind"],
        "seed": card["seed"],
        "train_size": int(len(truth["train"])),
        "test_size": int(len(truth["test"])),
        "test_accuracy": accuracy_score(truth["test"], pred["test"]),
        "test_macro_f1": f1_score(truth["test"], pred["test"], average="macro", labels=ids, zero_division=0),
        "train_accuracy": accuracy_score(truth["train"], pred["train"]),
        "val_accuracy": accuracy_score(truth["val"], pred["val"]),
        "trainable_params": card["trainable_params"],
        "total_params": card["total_params"],
        "train_seconds": card["train_seconds"],
        "peak_memory_mb": card["peak_memory_mb"],
        "epochs": card["epochs"],
        "trained_groups": " ".join(card["trained_groups"]) or "head only",
    }
    metrics = {k: round(float(v), 6) if isinstance(v, (float, np.floating)) else v for k, v in metrics.items()}
    write_json(out_dir / "classification_report.json", {
        "per_class": classification_report(truth["test"], pred["test"], labels=ids, target_names=names,
                                           output_dict=True, zero_division=0),
        "confusion_matrix": {"labels": names,
                             "matrix": confusion_matrix(truth["test"], pred["test"], labels=ids).tolist()},
    })
    probs = torch.softmax(logits["test"], -1).numpy()
    table = pd.DataFrame({**identify_rows(read_split(data_dir, "test")),
                          "actual": [names[i] for i in truth["test"]],
                          "predicted": [names[i] for i in pred["test"]]})
    table = pd.concat([table, pd.DataFrame(probs, columns=[f"p_{n}" for n in names])], axis=1)
    with atomic_path(out_dir / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_json(out_dir / "metrics.json", metrics)  # last: its presence means the run is complete
    return metrics


def dvc_main(cfg: DictConfig) -> None:
    dirs = artifact_dirs(cfg)
    features = features_entry(cfg, dirs["data"], dirs["features"]) if cfg.strategy.kind == "head" else None
    run(cfg, dirs["data"], features, dirs["model"], dirs["eval"])
