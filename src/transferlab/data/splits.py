"""Cleaning and stratified splitting: the same seed gives the same splits and subsets everywhere."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from transferlab.errors import DataError, first_line

log = logging.getLogger("transferlab")

SPLITS = ("train", "val", "test")


@dataclass
class Splits:
    frames: dict[str, pd.DataFrame]
    labels: list[str]  # index -> name; the label map


def input_column(df: pd.DataFrame) -> str:
    """The column a backbone reads: `image` for image sources, else `text`."""
    return "image" if "image" in df.columns else "text"


def _content_key(item) -> bytes | None:
    """Identity of one image for de-duplication: its bytes, or an array's shape + pixels."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item) or None
    if isinstance(item, np.ndarray):
        return repr(item.shape).encode() + item.tobytes() if item.size else None
    return None


def clean(df: pd.DataFrame) -> pd.DataFrame:
    """Drop rows with no label, empty inputs (blank texts, zero-byte images) and exact duplicates."""
    column = input_column(df)
    df = df.dropna(subset=["label"]).dropna(subset=[column])
    label = df["label"]
    if pd.api.types.is_float_dtype(label) and (label % 1 == 0).all():
        label = label.astype("int64")  # a CSV's 1, 2 with a blank label among them read as 1.0, 2.0
    if column == "text":
        df = df.assign(text=df["text"].astype(str), label=label.astype(str))
        df = df[df["text"].str.strip() != ""]
        return first_of_each(df, df["text"])
    keys = df[column].map(_content_key)
    df = df.assign(label=label.astype(str))[keys.notna().to_numpy()]
    return first_of_each(df, keys.dropna())


def first_of_each(df: pd.DataFrame, keys: pd.Series) -> pd.DataFrame:
    """Each input once, in its first row (a duplicate could land in train and test at once). An
    input listed under two labels keeps its first, and a warning counts them: the data disagrees
    with itself, which no strategy can learn (the same image in two class folders, a text labelled twice)."""
    keys = pd.Series(keys.to_numpy(), index=df.index)
    labels_per_input = df["label"].groupby(keys, sort=False).nunique()
    if (conflicting := int((labels_per_input > 1).sum())):
        log.warning("%d input(s) appear under more than one label; each is kept once, under its first "
                    "label (of %d rows)", conflicting, len(df))
    return df[~keys.duplicated().to_numpy()].reset_index(drop=True)


def where(cfg: DictConfig) -> str:
    """What an error about the data names: the user's file or folder when there is one."""
    return str(cfg.path) if cfg.get("path") else f"data '{cfg.name}'"


def why_empty(raw: pd.DataFrame) -> str:
    """Why cleaning left nothing, counted on the raw rows, so the user knows which column to look at."""
    if raw.empty:
        return "the table has a header but no rows"
    column = input_column(raw)
    no_label = int(raw["label"].isna().sum())
    blank = int(raw[column].map(lambda x: x is None or (isinstance(x, float) and np.isnan(x))
                                or (isinstance(x, str) and not x.strip())).sum()) if column == "text" else 0
    return (f"{len(raw)} rows: {no_label} without a label, {blank} with an empty {column}; "
            "check data.label_column and data.text_column")


def limit_rows(df: pd.DataFrame, limit, seed: int) -> pd.DataFrame:
    """A stratified subsample of `limit` rows keeping every class (at least 3 rows each, so it can
    still be split), in the original row order; drawn by `seed`, independently of the split."""
    if limit is None:
        return df
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise DataError(f"data.limit={limit!r}: must be a count > 0 or null")
    if limit >= len(df):
        return df
    labels = sorted(df["label"].unique())
    sizes = df["label"].value_counts()[labels].to_numpy()
    floor = np.minimum(sizes, 3)
    if limit < floor.sum():
        raise DataError(f"data.limit={limit}: too few to keep 3 rows of each of the {len(labels)} classes "
                        f"(needs at least {floor.sum()})")
    keep = _allocate(sizes, limit, floor, sizes)
    rng = np.random.default_rng([seed, 1])  # its own stream: the split's draws do not depend on it
    values = df["label"].to_numpy()
    rows = np.concatenate([rng.permutation(np.flatnonzero(values == name))[:n]
                           for name, n in zip(labels, keep)])
    return df.iloc[np.sort(rows)].reset_index(drop=True)


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


def _allocate(counts: np.ndarray, total: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """`total` rows spread over classes in proportion to `counts`, each class within [lo, hi].

    Largest remainder, ties to the earlier class: deterministic, and the shares are as close to
    proportional as the bounds allow. Needs sum(lo) <= total <= sum(hi).
    """
    assert lo.sum() <= total <= hi.sum(), (lo, total, hi)
    ideal = total * counts / counts.sum()
    alloc = np.clip(np.floor(ideal).astype(int), lo, hi)
    while (diff := total - alloc.sum()) != 0:
        room = alloc < hi if diff > 0 else alloc > lo
        gap = ideal - alloc if diff > 0 else alloc - ideal
        i = np.flatnonzero(room)[np.argmax(gap[room])]
        alloc[i] += 1 if diff > 0 else -1
    return alloc


def _held_out_size(n: int, fraction: float, n_classes: int, key: str) -> int:
    size = int(n * fraction + 0.5)
    if size < n_classes:
        raise DataError(f"{key}={fraction}: {size} of {n} rows cannot hold all {n_classes} classes")
    return size


def split(df: pd.DataFrame, cfg: DictConfig, seed: int) -> Splits:
    """Stratified train/val/test with every class in every split, then the `train_size` subset.

    Each class's rows are shuffled once (by `seed`) and cut into test | val | train, so test and
    val do not depend on train_size, and a smaller train subset is drawn from the same order.
    """
    cleaned = clean(df)
    if cleaned.empty:
        raise DataError(f"{where(cfg)}: no usable rows ({why_empty(df)})")
    df = limit_rows(cleaned, cfg.get("limit"), seed)
    counts = df["label"].value_counts()
    if len(counts) < 2:
        raise DataError(f"{where(cfg)}: needs at least 2 classes, found {len(counts)} "
                        f"({list(counts.index)})")
    rare = counts[counts < 3]
    if len(rare):
        raise DataError(f"{where(cfg)}: class {rare.index[0]!r} has {rare.iloc[0]} example(s); "
                        "stratified train/val/test needs at least 3")
    if cfg.val_fraction + cfg.test_fraction >= 1:
        raise DataError(f"data.val_fraction + data.test_fraction = {cfg.val_fraction + cfg.test_fraction:g}: "
                        "must be < 1 to leave rows for training")
    labels = sorted(counts.index)
    df = df.assign(label=df["label"].map({name: i for i, name in enumerate(labels)}))
    sizes = counts[labels].to_numpy()
    n, k, ones = int(sizes.sum()), len(labels), np.ones(len(labels), dtype=int)
    n_test = _held_out_size(n, cfg.test_fraction, k, "data.test_fraction")
    n_val = _held_out_size(n, cfg.val_fraction, k, "data.val_fraction")
    if cfg.get("val_max_rows"):  # validation runs many times a fit: its rows beyond the cap train instead
        n_val = max(k, min(n_val, cfg.val_max_rows))
    if n_test + n_val > n - k:
        raise DataError(f"{where(cfg)}: {n} rows are too few for {n_test} test, {n_val} val "
                        f"and {k} training rows")
    test = _allocate(sizes, n_test, ones, sizes - 2)
    val = _allocate(sizes - test, n_val, ones, sizes - test - 1)
    pool = sizes - test - val
    size = resolve_train_size(cfg.train_size, int(pool.sum()), k)
    train = pool if size is None else _allocate(pool, size, ones, pool)

    rng = np.random.default_rng(seed)
    order = [rng.permutation(np.flatnonzero(df["label"].to_numpy() == i)) for i in range(k)]
    cuts = {"test": [o[:t] for o, t in zip(order, test)],  # test, val first: rows and order
            "val": [o[t:t + v] for o, t, v in zip(order, test, val)],  # independent of train_size
            "train": [o[t + v:t + v + m] for o, t, v, m in zip(order, test, val, train)]}
    frames = {name: df.iloc[rng.permutation(np.concatenate(parts))].reset_index(drop=True)
              for name, parts in cuts.items()}
    return Splits({name: frames[name] for name in SPLITS}, labels)


def data_card(splits: Splits) -> dict:
    """Counts per class per split: what the model actually saw."""
    return {
        "classes": splits.labels,
        "counts": {name: {splits.labels[i]: int(n) for i, n in
                          frame["label"].value_counts().sort_index().items()}
                   for name, frame in splits.frames.items()},
        "sizes": {name: len(frame) for name, frame in splits.frames.items()},
    }


def check_prepared(data_dir: str | Path) -> list[str]:
    """The label map of a prepared data directory, after checking what training relies on.

    `prepare` guarantees every class in every split; a directory made or edited by hand (or by an
    older version) may not, and a label seen only in val/test would otherwise surface as a
    shape error deep inside Lightning, or as a silently unlearnable class.
    """
    data_dir = Path(data_dir)
    labels_file = data_dir / "labels.json"
    if not labels_file.is_file():
        raise DataError(f"{data_dir}: not a prepared data directory (no labels.json)")
    try:
        labels = json.loads(labels_file.read_text())
        ids = {s: set(pd.read_parquet(data_dir / f"{s}.parquet", columns=["label"])["label"]) for s in SPLITS}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{data_dir}: unreadable prepared data ({first_line(exc)})") from None
    for name in SPLITS:
        unknown = sorted(i for i in ids[name] if not isinstance(i, (int, np.integer)) or not 0 <= i < len(labels))
        if unknown:
            raise DataError(f"{data_dir / f'{name}.parquet'}: label {unknown[0]!r} is not an index into "
                            f"labels.json ({len(labels)} classes)")
        unseen = sorted(ids[name] - ids["train"])
        if unseen:
            raise DataError(f"{data_dir / f'{name}.parquet'}: label {labels[unseen[0]]!r} never occurs in "
                            "train.parquet, so no model can learn it; prepare the data again")
    return labels
