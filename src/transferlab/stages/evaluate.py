"""Stage `evaluate`: the trained model on train/val/test -> metrics.json, per-class report, predictions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from transferlab.atomic import atomic_path, write_json
from transferlab.data.datamodules import labels_of, read_split
from transferlab.data.splits import SPLITS
from transferlab.features import load_features
from transferlab.inference import feature_logits, input_logits
from transferlab.models import TrainedModel, load_trained


def split_logits(model: TrainedModel, data_dir: Path, features_dir: Path | None) -> tuple[dict, float]:
    """Logits per split, in the split's row order: a head on the cached features, a fine-tuned
    model on the raw inputs; and the seconds the test split took (what labelling new items costs)."""
    cfg = model.cfg
    logits, test_seconds = {}, 0.0
    for s in SPLITS:
        started = time.perf_counter()
        if model.card["kind"] == "head":
            logits[s] = feature_logits(model.module, load_features(features_dir, s), cfg.trainer)
        else:
            column = model.module.backbone.input_column
            logits[s] = input_logits(model.module, read_split(data_dir, s)[column].tolist(),
                                     cfg.extract.batch_size, cfg.trainer)
        if s == "test":
            test_seconds = time.perf_counter() - started
    return logits, test_seconds


def cost_ledger(model: TrainedModel, features_dir: Path | None, rows: dict[str, int], test_seconds: float) -> dict:
    """The same costs for every strategy: loading the backbone (for its features, for fine-tuning:
    LP-FT both), extracting the items it trains and validates on at the rate this backbone measured
    on this data, when it uses cached features, and training (every attempt; LP-FT: probe too);
    inference per 1,000 items from the test split (heads: extraction + the head)."""
    facts = {}
    if features_dir is not None and (Path(features_dir) / "meta.json").is_file():
        facts = json.loads((Path(features_dir) / "meta.json").read_text())
    rate = facts.get("seconds_per_item", 0.0)
    uses_features = model.strategy.needs_features
    extraction = rate * (rows["train"] + rows["val"]) if uses_features else 0.0
    load = model.card.get("backbone_load_seconds", 0.0) + (facts.get("load_seconds", 0.0) if uses_features else 0.0)
    per_item = test_seconds / max(1, rows["test"]) + (rate if model.card["kind"] == "head" else 0.0)
    return {"backbone_load_seconds": round(load, 3), "extraction_seconds": round(extraction, 3),
            "cost_to_train_seconds": round(load + extraction + model.card["train_seconds"], 3),
            "inference_seconds_per_1k": round(1000 * per_item, 4)}


def identify_rows(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """What predictions.csv shows of each input: the text itself; for an image, where it came from
    (its file or data-set name, else its row number), never its bytes."""
    if "text" in frame.columns:
        return {"text": frame["text"]}
    return {"image": frame["name"] if "name" in frame.columns else pd.Series(range(len(frame)))}


def run(data_dir: str | Path, features_dir: str | Path | None, model_dir: str | Path, out_dir: str | Path) -> dict:
    """The run folder's model, rebuilt from the folder alone (as `transferlab predict` rebuilds it)."""
    data_dir, model_dir, out_dir = Path(data_dir), Path(model_dir), Path(out_dir)
    model = load_trained(model_dir)
    card = model.card
    features_dir = Path(features_dir) if features_dir else None
    logits, test_seconds = split_logits(model, data_dir, features_dir)
    truth = {s: labels_of(data_dir, s).numpy() for s in SPLITS}
    pred = {s: logits[s].argmax(-1).numpy() for s in SPLITS}
    names, ids = card["labels"], list(range(len(card["labels"])))
    metrics = {
        "strategy": card["strategy"],
        "kind": card["kind"],
        "seed": card["seed"],
        "train_size": int(len(truth["train"])),
        "val_size": int(len(truth["val"])),
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
        **cost_ledger(model, features_dir, {s: len(truth[s]) for s in SPLITS}, test_seconds),
        "trained_groups": " ".join(card["trained_groups"]) or "head only",
        "extract_precision": card.get("precision", {}).get("extract"),
        "trainer_precision": card.get("precision", {}).get("trainer"),
        "cpu": card.get("cpu"),
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
