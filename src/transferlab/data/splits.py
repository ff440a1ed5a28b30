"""Cleaning and stratified splitting: the same seed gives the same splits and subsets everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split

from transferlab.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class Splits:
    frames: dict[str, pd.DataFrame]
    labels: list[str]  # index -> name; the label map


def clean(df: pd.DataFrame) -> pd.DataFrame:
    """Drop rows with no label, empty or whitespace-only texts, and exact duplicate texts."""
    df = df.dropna(subset=["label"]).dropna(subset=["text"])
    df = df.assign(text=df["text"].astype(str), label=df["label"].astype(str))
    df = df[df["text"].str.strip() != ""]
    return df.drop_duplicates(subset="text").reset_index(drop=True)


def resolve_train_size(train_size, available: int, n_classes: int) -> int | None:
    """A count, a fraction in (0, 1], or None/'all' -> number of training rows (None = all)."""
    if train_size is None or train_size == "all":
        return None
    if isinstance(train_size, bool) or not isinstance(train_size, (int, float)):
        raise DataError(f"data.train_size={train_size!r}: must be a count, a fraction in (0, 1] or 'all'")
    if isinstance(train_size, float) and not train_size.is_integer() or 0 < train_size <= 1:
        if not 0 < train_size <= 1:
            raise DataError(f"data.train_size={train_size!r}: a fraction must be in (0, 1]")
        count = round(train_size * available)
    else:
        count = int(train_size)
        if count <= 0:
            raise DataError(f"data.train_size={train_size!r}: must be > 0")
        if count > available:
            raise DataError(f"data.train_size={count}: only {available} training rows are available")
    if count < n_classes:
        raise DataError(f"data.train_size={train_size!r}: {count} rows cannot hold all {n_classes} classes")
    return None if count == available else count


def split(df: pd.DataFrame, cfg: DictConfig, seed: int) -> Splits:
    df = clean(df)
    counts = df["label"].value_counts()
    if len(counts) < 2:
        raise DataError(f"data '{cfg.name}': needs at least 2 classes, found {len(counts)} "
                        f"({list(counts.index)})")
    rare = counts[counts < 3]
    if len(rare):
        raise DataError(f"data '{cfg.name}': class {rare.index[0]!r} has {rare.iloc[0]} example(s); "
                        "stratified train/val/test needs at least 3")
    labels = sorted(counts.index)
    df = df.assign(label=df["label"].map({name: i for i, name in enumerate(labels)}))
    try:
        rest, test = train_test_split(df, test_size=cfg.test_fraction, stratify=df["label"],
                                      random_state=seed)
        val_share = cfg.val_fraction / (1 - cfg.test_fraction)
        train, val = train_test_split(rest, test_size=val_share, stratify=rest["label"],
                                      random_state=seed)
        size = resolve_train_size(cfg.train_size, len(train), len(labels))
        if size is not None:
            train, _ = train_test_split(train, train_size=size, stratify=train["label"],
                                        random_state=seed)
    except ValueError as exc:
        raise DataError(f"data '{cfg.name}': cannot stratify ({str(exc).splitlines()[0]})") from None
    frames = {"train": train, "val": val, "test": test}
    return Splits({k: v.reset_index(drop=True) for k, v in frames.items()}, labels)


def data_card(splits: Splits) -> dict:
    """Counts per class per split: what the model actually saw."""
    return {
        "classes": splits.labels,
        "counts": {name: {splits.labels[i]: int(n) for i, n in
                          frame["label"].value_counts().sort_index().items()}
                   for name, frame in splits.frames.items()},
        "sizes": {name: len(frame) for name, frame in splits.frames.items()},
    }
