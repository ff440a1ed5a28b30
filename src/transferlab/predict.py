"""Label new inputs with any trained run: `transferlab predict RUN_DIR INPUT`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset, TensorDataset

from transferlab.backbones import backbone_class
from transferlab.config import checked
from transferlab.data.sources import read_table
from transferlab.data.datamodules import EncodedInputs, in_row_order
from transferlab.checkpoints import check_fits, load_weights
from transferlab.errors import DataError, first_line
from transferlab.stages import extract, finetune, train_head
from transferlab.trainer import predict_logits

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_run(run_dir: Path) -> tuple[DictConfig, dict, torch.nn.Module]:
    """The run's config, model card and module with its trained weights."""
    for name in ("config.yaml", "model.json", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir}: not a trained run (no {name})")
    cfg = checked(OmegaConf.load(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    card = read_card(run_dir / "model.json")
    weights = load_weights(run_dir / "model.safetensors")
    if card["kind"] == "head":
        module = train_head.build_module(cfg, card["feature_dim"], len(card["labels"]))
    else:
        module = finetune.build_module(cfg, len(card["labels"]))
    check_fits(weights, module, run_dir / "model.safetensors")  # a file copied from another run
    module.load_state_dict(weights)
    return cfg, card, module.eval()


def read_card(path: Path) -> dict:
    """model.json with the fields a rebuild needs; a hand-edited or truncated one in one line."""
    try:
        card = json.loads(path.read_text())
        missing = [k for k in ("kind", "labels", "feature_dim") if k not in card]
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a model card ({first_line(exc)})") from None
    if missing:
        raise DataError(f"{path}: not a model card (no {missing[0]})")
    return card


def read_inputs(path: Path, column: str) -> tuple[list, list[str]]:
    """(inputs, row names) from a CSV/Parquet column, or from a folder of images."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no images found")
        return [f.read_bytes() for f in files], [str(f.relative_to(path)) for f in files]
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    frame = read_table(path)
    if column not in frame.columns:
        raise DataError(f"{path}: no column '{column}'; columns are {list(frame.columns)}")
    items = frame[column].tolist()
    return items, [str(x) for x in items] if column == "text" else [str(i) for i in range(len(items))]


def logits_for(cfg: DictConfig, card: dict, module: torch.nn.Module, items: list) -> torch.Tensor:
    if card["kind"] == "head":
        features, _ = extract.embed(cfg.backbone, cfg.extract, items)
        loader = DataLoader(TensorDataset(features, torch.zeros(len(items), dtype=torch.long)), batch_size=1024)
        return predict_logits(module, loader, cfg)
    dataset = EncodedInputs(items, torch.zeros(len(items), dtype=torch.long), module.backbone)
    loader = DataLoader(Subset(dataset, dataset.by_length()), batch_size=cfg.strategy.batch_size,
                        collate_fn=dataset.collate)
    return in_row_order(predict_logits(module, loader, cfg), loader)


def predict(run_dir: str | Path, input_path: str | Path, column: str | None = None) -> pd.DataFrame:
    """One row per input: its name, the predicted label and a probability per label."""
    cfg, card, module = load_run(Path(run_dir))
    items, names = read_inputs(Path(input_path), column or backbone_class(cfg.backbone).input_column)
    probs = torch.softmax(logits_for(cfg, card, module, items), -1).numpy()
    labels = card["labels"]
    table = pd.DataFrame({"input": names, "predicted": [labels[i] for i in probs.argmax(-1)]})
    return pd.concat([table, pd.DataFrame(probs, columns=[f"p_{n}" for n in labels])], axis=1)


def example_inputs(run_dir: str | Path, input_path: str | Path, column: str | None = None, count: int = 2) -> list:
    cfg = checked(OmegaConf.load(Path(run_dir) / "config.yaml"), str(Path(run_dir) / "config.yaml"))
    return read_inputs(Path(input_path), column or backbone_class(cfg.backbone).input_column)[0][:count]
