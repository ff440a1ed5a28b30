"""Label new inputs with any trained run: `transferlab predict RUN_DIR INPUT`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.backbones import backbone_class
from transferlab.config import checked
from transferlab.data.sources import IMAGE_EXTENSIONS, image_files, read_image, read_table
from transferlab.errors import DataError
from transferlab.models import TrainedModel, load_trained


def read_inputs(path: Path, columns: Sequence[str]) -> tuple[list, list[str]]:
    """(inputs, row names) from the first of `columns` a CSV/Parquet file has, or from an image file or
    a folder of images.

    A file that holds nothing to label, or rows with no input, is refused in one line naming the
    file and the rows: the model would fail on them mid-batch, or label a blank as some class.
    """
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise DataError(f"{path}: no images found")
        return [read_image(f) for f in files], [str(f.relative_to(path)) for f in files]
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    if path.suffix.lower() in IMAGE_EXTENSIONS:  # one image: read as a table it was 'not UTF-8 text'
        return [read_image(path)], [path.name]
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    frame = read_table(path)
    column = next((c for c in columns if c in frame.columns), None)
    if column is None:
        raise DataError(f"{path}: no column {' or '.join(map(repr, columns))}; columns are {list(frame.columns)} "
                        "(name the input column: --column, or column= in Python)")
    if frame.empty:
        raise DataError(f"{path}: no rows to predict (the table has a header but no rows)")
    items = [as_input(x) for x in frame[column]]
    empty = [i for i, x in enumerate(items) if blank(x)]
    if empty:
        raise DataError(f"{path}: {len(empty)} of {len(items)} rows have an empty '{column}' "
                        f"(data rows {listed(i + 1 for i in empty)}, counting from 1 below the header)")
    return items, row_names(items)


def row_names(items: list) -> list[str]:
    """How the predictions name each input: a text as itself, whatever its column is called;
    images (bytes) by their row, counting from 0."""
    return list(items) if all(isinstance(x, str) for x in items) else [str(i) for i in range(len(items))]


def as_input(cell):
    """A number in a text column is its text, as training reads it (a column of only numbers
    comes out of read_csv as ints or floats); a missing cell stays missing."""
    return str(cell) if isinstance(cell, (int, float, np.number)) and not blank(cell) else cell


def blank(item) -> bool:
    """No input at all: a missing cell (None, NaN, NA), an empty or whitespace-only text, no bytes."""
    if isinstance(item, str):
        return not item.strip()
    if isinstance(item, bytes):
        return not item
    return item is None or item is pd.NA or (isinstance(item, float) and math.isnan(item))


def listed(positions: Iterable[int], shown: int = 5) -> str:
    positions = list(positions)
    return ", ".join(map(str, positions[:shown])) + (", ..." if len(positions) > shown else "")


def table(model: TrainedModel, items: list, names: list[str]) -> pd.DataFrame:
    """One row per input: its name, the predicted label and a probability per label.

    The Python API calls this with the user's own list, so it refuses what the model cannot label
    (no items; for a text model, an item that is not a non-blank str) before any batch is run.
    """
    if not items:
        raise DataError("input: no items to predict (an empty list)")
    if backbone_class(model.cfg.backbone).input_column == "text":
        bad = [i for i, x in enumerate(items) if not isinstance(x, str) or blank(x)]
        if bad:
            raise DataError(f"input: {len(bad)} of {len(items)} items are blank or not a str "
                            f"(positions {listed(bad)}, counting from 0)")
    probs = torch.softmax(model.logits(items), -1).numpy()
    labels = model.labels
    named = pd.DataFrame({"input": names, "predicted": [labels[i] for i in probs.argmax(-1)]})
    return pd.concat([named, pd.DataFrame(probs, columns=[f"p_{n}" for n in labels])], axis=1)


def predict(run_dir: str | Path, input_path: str | Path, column: str | None = None) -> pd.DataFrame:
    """`transferlab predict`: a run folder's model over a file's column or a folder of images."""
    model = load_trained(run_dir)
    items, names = read_inputs(Path(input_path), input_columns(model.cfg, column))
    return table(model, items, names)


def input_columns(cfg: DictConfig, column: str | None) -> tuple[str, ...]:
    """Where a file's inputs are: the column asked for; else the column the run trained on
    (data.text_column), then the backbone's (`text`), so a file laid out like the training data
    needs no --column."""
    if column is not None:
        return (column,)
    default = backbone_class(cfg.backbone).input_column
    return tuple(dict.fromkeys([str(cfg.data.text_column), default])) if default == "text" else (default,)


def example_inputs(run_dir: str | Path, input_path: str | Path, column: str | None = None, count: int = 2) -> list:
    cfg = checked(OmegaConf.load(Path(run_dir) / "config.yaml"), str(Path(run_dir) / "config.yaml"))
    return read_inputs(Path(input_path), input_columns(cfg, column))[0][:count]
