"""The `prepare` stage on small real data: cleaning, stratified splits, train_size, outputs, atomicity."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import topic_frame
from omegaconf import OmegaConf

from transferlab.config import DataConfig, checked
from transferlab.data.splits import SPLITS
from transferlab.errors import DataError
from transferlab.stages import prepare

N_CLASSES = len(topic_frame()["topic"].unique())


def data_cfg(path: Path, **overrides):
    return OmegaConf.structured(DataConfig(name="topics", source="csv", path=str(path),
                                           label_column="topic", **overrides))


def write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def read(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in SPLITS}


def prepared(tmp_path: Path, csv: Path, seed: int = 0, **overrides) -> dict[str, pd.DataFrame]:
    """prepare.run into a fresh directory; the splits it wrote."""
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "prepared"
    return read(prepare.run(data_cfg(csv, **overrides), seed, out))


def texts(frame: pd.DataFrame) -> set[str]:
    return set(frame["text"])


def imbalanced(tmp_path: Path) -> Path:
    """40 sport, 20 tech, 8 business: stratification has something to preserve."""
    frame = topic_frame(copies=10)
    keep = {"sport": 40, "tech": 20, "business": 8}
    frame = pd.concat([frame[frame.topic == t].head(n) for t, n in keep.items()])
    return write_csv(tmp_path, frame, "imbalanced.csv")


def test_cleaning_drops_empty_texts_missing_labels_and_duplicates(tmp_path, caplog):
    good = topic_frame()
    bad = pd.DataFrame({"text": ["", "   \t ", None, "a text with no label", good.text[0]],
                        "topic": ["sport", "tech", "sport", None, "business"]})
    csv = write_csv(tmp_path, pd.concat([good, bad]))
    out = prepare.run(data_cfg(csv), 0, tmp_path / "out")
    kept = pd.concat(read(out).values())
    assert len(kept) == len(good)
    assert kept["text"].is_unique
    assert texts(kept) == set(good.text)  # the no-label row and the blank texts are gone
    labels = json.loads((out / "labels.json").read_text())
    # the duplicate (relabelled 'business') is dropped; the first occurrence keeps its label
    first = kept[kept.text == good.text[0]]
    assert labels[first.label.item()] == good.topic[0]
    assert "1 input(s) appear under more than one label" in caplog.text  # said, not silently resolved


def test_integer_labels_with_a_blank_stay_integers(tmp_path):
    """A blank label makes pandas read 1, 2, 3 as floats; the label map must still say '1', not '1.0'."""
    frame = topic_frame().assign(topic=lambda f: f.topic.map({"sport": 1, "tech": 2, "business": 3}))
    frame.loc[0, "topic"] = None
    out = prepare.run(data_cfg(write_csv(tmp_path, frame)), 0, tmp_path / "out")
    assert json.loads((out / "labels.json").read_text()) == ["1", "2", "3"]


def test_splits_are_disjoint_cover_the_data_and_hold_every_class(tmp_path, topic_csv):
    frames = prepared(tmp_path, topic_csv)
    assert {n: len(f) for n, f in frames.items()} == {"train": 42, "val": 6, "test": 12}
    train, val, test = (texts(frames[n]) for n in SPLITS)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(topic_frame().text)
    for frame in frames.values():  # balanced data -> exactly balanced splits
        assert frame["label"].value_counts().tolist() == [len(frame) // N_CLASSES] * N_CLASSES


def test_split_keeps_class_proportions(tmp_path):
    frames = prepared(tmp_path, imbalanced(tmp_path))
    share = pd.Series({"business": 8, "sport": 40, "tech": 20}) / 68
    for name, frame in frames.items():
        counts = frame["label"].value_counts().sort_index()
        assert len(counts) == N_CLASSES, name
        assert np.abs(counts.to_numpy() - share.to_numpy() * len(frame)).max() <= 1, (name, counts)


def test_a_rare_class_lands_in_every_split(tmp_path):
    """3 examples is the documented minimum: one each for train, val and test, even among 100 others."""
    frame = pd.DataFrame({"text": [f"common sentence {i}" for i in range(100)] + ["rare a", "rare b", "rare c"],
                          "topic": ["common"] * 100 + ["rare"] * 3})
    for seed in range(3):
        frames = prepared(tmp_path, write_csv(tmp_path, frame), seed=seed)
        assert all((f["label"] == 1).sum() == 1 for f in frames.values()), seed


def test_same_seed_same_splits_other_seed_other_splits(tmp_path, topic_csv):
    first, again, other = (prepared(tmp_path, topic_csv, seed=s) for s in [7, 7, 8])
    for name in SPLITS:
        pd.testing.assert_frame_equal(first[name], again[name])
    assert texts(first["test"]) != texts(other["test"])
    assert texts(first["train"]) != texts(other["train"])


def test_train_size_subsets_train_only(tmp_path, topic_csv):
    """Learning curves compare train sizes on one test set: val/test must not move with train_size."""
    full = prepared(tmp_path, topic_csv)
    small = prepared(tmp_path, topic_csv, train_size=6)
    for name in ("val", "test"):
        pd.testing.assert_frame_equal(full[name], small[name])
    assert texts(small["train"]) <= texts(full["train"])


@pytest.mark.parametrize("count", [3, 12, 41])
def test_train_size_count_is_exact_and_stratified(tmp_path, topic_csv, count):
    """41 = one short of the 42 available: the complement is too small to stratify, the subset is not."""
    train = prepared(tmp_path, topic_csv, train_size=count)["train"]
    assert len(train) == count
    per_class = train["label"].value_counts()
    assert len(per_class) == N_CLASSES
    assert per_class.max() - per_class.min() <= 1


def test_train_size_count_keeps_every_class_in_imbalanced_data(tmp_path):
    train = prepared(tmp_path, imbalanced(tmp_path), train_size=N_CLASSES)["train"]
    assert sorted(train["label"]) == list(range(N_CLASSES))


def test_train_size_fraction(tmp_path, topic_csv):
    train = prepared(tmp_path, topic_csv, train_size=0.5)["train"]
    assert len(train) == 21  # half of 42
    assert train["label"].value_counts().max() - train["label"].value_counts().min() <= 1


@pytest.mark.parametrize("train_size", [None, "all", 1.0])
def test_train_size_all(tmp_path, topic_csv, train_size):
    cfg = checked({"data": {**OmegaConf.to_container(data_cfg(topic_csv)), "train_size": train_size}},
                  "test").data
    frames = read(prepare.run(cfg, 0, tmp_path / "out"))
    assert len(frames["train"]) == 42


@pytest.mark.parametrize("train_size", [0, -5, 43, 10_000, 1.5, -0.5, "half"])
def test_bad_train_size_is_a_one_line_error_and_writes_nothing(tmp_path, topic_csv, train_size):
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        prepare.run(data_cfg(topic_csv, train_size=train_size), 0, out)
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.train_size=")
    assert not out.exists()


def test_bad_fractions_name_their_keys(tmp_path, topic_csv):
    with pytest.raises(DataError, match=r"^data\.val_fraction \+ data\.test_fraction = 1: must be < 1"):
        prepare.run(data_cfg(topic_csv, val_fraction=0.5, test_fraction=0.5), 0, tmp_path / "a")
    with pytest.raises(DataError, match=r"^data\.test_fraction=0\.01: 1 of 60 rows cannot hold all 3 classes"):
        prepare.run(data_cfg(topic_csv, test_fraction=0.01), 0, tmp_path / "b")
    assert list(tmp_path.iterdir()) == [tmp_path / "topics.csv"]


def test_label_map_is_sorted_and_parquet_labels_follow_it(tmp_path, topic_csv):
    out = prepare.run(data_cfg(topic_csv), 0, tmp_path / "out")
    labels = json.loads((out / "labels.json").read_text())
    assert labels == ["business", "sport", "tech"]
    truth = dict(zip(topic_frame().text, topic_frame().topic))
    for frame in read(out).values():
        assert frame["label"].dtype.kind == "i"
        assert [labels[i] for i in frame["label"]] == [truth[t] for t in frame["text"]]


def test_data_card_counts_match_the_parquet_files(tmp_path):
    out = prepare.run(data_cfg(imbalanced(tmp_path), train_size=20), 0, tmp_path / "out")
    card = json.loads((out / "data_card.json").read_text())
    labels = json.loads((out / "labels.json").read_text())
    assert card["classes"] == labels
    for name, frame in read(out).items():
        assert card["sizes"][name] == len(frame)
        assert card["counts"][name] == {labels[i]: n for i, n in frame["label"].value_counts().items()}
    assert card["sizes"]["train"] == 20


def test_failed_run_leaves_no_directory_and_an_earlier_one_untouched(tmp_path, topic_csv):
    out = tmp_path / "prepared"
    with pytest.raises(DataError):
        prepare.run(data_cfg(tmp_path / "missing.csv"), 0, out)
    assert not out.exists()

    prepare.run(data_cfg(topic_csv), 0, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"train.parquet", "val.parquet", "test.parquet", "labels.json", "data_card.json"}
    with pytest.raises(DataError):
        prepare.run(data_cfg(topic_csv, train_size=10_000), 0, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "topics.csv"]  # no temp dirs left


def test_rerun_replaces_the_directory_as_a_whole(tmp_path, topic_csv):
    """A rerun swaps in a complete new directory; it never merges into (or keeps files of) the old one."""
    out = prepare.run(data_cfg(topic_csv), 0, tmp_path / "prepared")
    (out / "stale.txt").write_text("from an older run")
    prepare.run(data_cfg(topic_csv, train_size=6), 0, out)
    assert not (out / "stale.txt").exists()
    assert len(read(out)["train"]) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "topics.csv"]


def test_val_max_rows_caps_validation_and_the_rest_trains(tmp_path, topic_csv):
    """Validation runs at every check of a fit: beyond data.val_max_rows its rows go to training."""
    full = prepared(tmp_path, topic_csv)
    capped = prepared(tmp_path, topic_csv, val_max_rows=3)
    assert len(capped["val"]) == 3 and set(capped["val"]["label"]) == set(full["val"]["label"])
    assert len(capped["train"]) == len(full["train"]) + len(full["val"]) - 3
    pd.testing.assert_frame_equal(full["test"], capped["test"])
