"""Label new inputs with any trained run: `transferlab predict RUN_DIR INPUT`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from transferlab.backbones import backbone_class
from transferlab.config import checked
from transferlab.data.sources import read_table
from transferlab.errors import DataError
from transferlab.models import load_trained

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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


def predict(run_dir: str | Path, input_path: str | Path, column: str | None = None) -> pd.DataFrame:
    """One row per input: its name, the predicted label and a probability per label."""
    model = load_trained(run_dir)
    items, names = read_inputs(Path(input_path), column or backbone_class(model.cfg.backbone).input_column)
    probs = torch.softmax(model.logits(items), -1).numpy()
    labels = model.labels
    table = pd.DataFrame({"input": names, "predicted": [labels[i] for i in probs.argmax(-1)]})
    return pd.concat([table, pd.DataFrame(probs, columns=[f"p_{n}" for n in labels])], axis=1)


def example_inputs(run_dir: str | Path, input_path: str | Path, column: str | None = None, count: int = 2) -> list:
    cfg = checked(OmegaConf.load(Path(run_dir) / "config.yaml"), str(Path(run_dir) / "config.yaml"))
    return read_inputs(Path(input_path), column or backbone_class(cfg.backbone).input_column)[0][:count]
