"""The bad-input catalogue: every mistake a user can make with data, config or files stops the same way.

Each case asserts the exception type (through the Python API, fast) or, for the cases run as the
user runs them, a non-zero exit code and one `error:` line on stderr; that the message is one
line naming the file, key or value and what is wrong; and that nothing was written and every
earlier artifact is byte-for-byte as it was (a snapshot of the whole working folder, taken after
the bad input was put in place, must be unchanged).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PYTHON, QUICK_BUDGET, ROOT, run_cell, topic_config, topic_frame
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_encoder import overrides as tiny_encoder
from tiny_encoder import tiny_encoder as tiny_encoder_dir
from tiny_encoder import vocabulary

from transferlab import predict
from transferlab.checkpoints import leave_out
from transferlab.config import (IMAGE_BACKBONES, IMAGE_SOURCES, TEXT_BACKBONES, TEXT_SOURCES, DataConfig,
                                checked, compose, load_params)
from transferlab.errors import ConfigError, DataError
from transferlab.models import build_finetune_module, load_trained
from transferlab.pipeline import run_grid
from transferlab.stages import extract, prepare, train
from transferlab.strategy import resolve
from transferlab.trainer import TrainedOn, fit_fingerprint

Build = Callable[[Path], tuple[Callable[[], object], str]]  # tmp -> (the failing call, what it must name)


@dataclass
class Case:
    build: Build
    error: type[Exception]
    says: tuple[str, ...] = ()  # what the message must say besides the name
    trained: bool = False  # the build predicts with the trained run, copied to tmp/"trained" first


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its content hash: equal snapshots mean nothing was written."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """A complete prepared data set, as an earlier good run left it."""
    root = tmp_path_factory.mktemp("earlier")
    topic_frame().to_csv(root / "topics.csv", index=False)
    return prepare.run(data_cfg(root / "topics.csv"), 0, root / "prepared")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real linear-probe run on the tiny encoder, trained once: what `transferlab predict` loads."""
    root = tmp_path_factory.mktemp("trained")
    run_cell(topic_config(root, "strategy=linear_probe"), root / "run")
    return root / "run"


def data_cfg(path: Path, **changes):
    fields = {"name": "topics", "source": "csv", "path": str(path), "label_column": "topic", **changes}
    return OmegaConf.structured(DataConfig(**fields))


def topics_cfg(*overrides: str):
    """On the tiny encoder: these cases check refusals and the cache's logic, not the model."""
    return checked(compose(["data=csv", "data.path=topics.csv", "data.label_column=topic",
                            *tiny_encoder(), *overrides]), "test")


# --- data, through prepare.run onto a folder holding the earlier good result -------------------

def table(content: pd.DataFrame | bytes | None, key: str | None = None, **changes) -> Build:
    """prepare.run on data.csv holding `content` (None: no file at all); the message must name the
    file, or `key` when the data is fine and a setting is not."""
    def build(tmp: Path):
        path = tmp / "in" / "data.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            content.to_csv(path, index=False)
        cfg = data_cfg(path, **changes)
        return (lambda: prepare.run(cfg, 0, tmp / "prepared")), key or str(path)
    return build


def frame(**columns) -> pd.DataFrame:
    return topic_frame().assign(**columns)


def fewer(label: str, keep: int) -> pd.DataFrame:
    f = topic_frame()
    return pd.concat([f[f.topic != label], f[f.topic == label].head(keep)])


def images(broken: Callable[[bytes], bytes] | None, count: int = 3) -> Build:
    """prepare.run on an image folder of two classes; `broken` makes one more file from a good PNG."""
    def build(tmp: Path):
        root = tmp / "in" / "imgs"
        for label, base in (("cats", 10), ("dogs", 200)):
            (root / label).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((8, 8), base + i, np.uint8)).save(root / label / f"{i}.png")
        named = root
        if broken is not None:
            named = root / "dogs" / "broken.png"
            named.write_bytes(broken((root / "dogs" / "0.png").read_bytes()))
        cfg = OmegaConf.structured(DataConfig(name="imgs", source="image_folder", path=str(root),
                                              val_fraction=0.2, test_fraction=0.2))
        return (lambda: prepare.run(cfg, 0, tmp / "prepared")), str(named)
    return build


def unknown_source(tmp: Path):
    """data.source set by hand (the API, or an edited params.yaml) to a source that does not exist."""
    cfg = data_cfg(tmp / "in" / "data.csv", source="nope")
    return (lambda: prepare.run(cfg, 0, tmp / "prepared")), "data.source='nope'"


def weights_file(content: Callable[[Path], None]) -> Build:
    """The image backbone built from backbone.model=<a .pth file> that `content` writes."""
    def build(tmp: Path):
        from transferlab.backbones import build_backbone

        path = tmp / "in" / "weights.pth"
        content(path)
        cfg = checked(compose(["backbone=efficientnet_lite0", f"backbone.model={path}", "data=fashion_mnist"]), "test")
        return (lambda: build_backbone(cfg.backbone)), "backbone.model="

    return build


def text_backbone(*overrides: str) -> Build:
    """The tiny encoder built with `overrides`, as extraction and fine-tuning build it."""
    def build(tmp: Path):
        from transferlab.backbones import build_backbone

        cfg = topics_cfg(*overrides)
        return (lambda: build_backbone(cfg.backbone)), overrides[-1]

    return build


def unwritable_output(tmp: Path):
    (tmp / "in" / "a_file").write_text("a file where a folder should be")
    topic_frame().to_csv(tmp / "in" / "data.csv", index=False)
    out = tmp / "in" / "a_file" / "prepared"
    return (lambda: prepare.run(data_cfg(tmp / "in" / "data.csv"), 0, out)), str(out)


# --- prediction, as `transferlab predict` and the Python API run it on the trained run ----------

def predicting(content: pd.DataFrame | bytes, column: str | None = None) -> Build:
    """predict.predict (what `transferlab predict` runs) on new.csv holding `content`."""
    def build(tmp: Path):
        path = tmp / "in" / "new.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content.to_csv(path, index=False)
        return (lambda: predict.predict(tmp / "trained", path, column)), str(path)
    return build


def predicting_items(items: list) -> Build:
    """predict.table on the user's own list, as the Python API calls it."""
    def build(tmp: Path):
        model = load_trained(tmp / "trained")
        return (lambda: predict.table(model, items, [str(x) for x in items])), "input"
    return build


# --- configuration ------------------------------------------------------------------------------

def overrides(*items: str) -> Build:
    """Composing conf/ with the user's overrides, then the schema and value checks."""
    return lambda tmp: ((lambda: checked(compose(list(items)), "test")), items[-1].partition("=")[0])


def params_file(edit: Callable[[dict], None] | None) -> Build:
    """A params.yaml (as dvc.yaml's stages read it), edited by `edit`; None: the file is missing."""
    def build(tmp: Path):
        path = tmp / "in" / "params.yaml"
        if edit is not None:
            params = OmegaConf.to_container(OmegaConf.load(ROOT / "params.yaml"))
            edit(params)
            OmegaConf.save(params, path)
        return (lambda: load_params(path)), str(path)
    return build


def misspell(params: dict) -> None:
    params["data"]["trian_size"] = params["data"].pop("train_size")


# --- prepared data, trained runs and checkpoints -------------------------------------------------

def label_unseen_in_train(tmp: Path):
    """A prepared folder edited by hand: every 'tech' row gone from train, still in val and test."""
    data = shutil.copytree(tmp / "prepared", tmp / "in" / "data")
    tech = json.loads((data / "labels.json").read_text()).index("tech")
    rows = pd.read_parquet(data / "train.parquet")
    rows[rows.label != tech].to_parquet(data / "train.parquet", index=False)
    return (lambda: train.run(topics_cfg(), data, None, tmp / "run")), str(data / "val.parquet")


def trained_run(weights: dict[str, torch.Tensor] | bytes) -> Build:
    """`transferlab predict`'s loader on a head-only run whose model.safetensors is not its own."""
    def build(tmp: Path):
        run = tmp / "in" / "run"
        run.mkdir()
        (run / "config.yaml").write_text(OmegaConf.to_yaml(topics_cfg("strategy=linear_probe")))
        (run / "model.json").write_text(json.dumps({"kind": "head", "labels": ["business", "sport", "tech"],
                                                    "feature_dim": 384, "strategy": "linear_probe"}))
        if isinstance(weights, bytes):
            (run / "model.safetensors").write_bytes(weights)
        else:
            save_file(weights, str(run / "model.safetensors"))
        return (lambda: load_trained(run)), str(run / "model.safetensors")
    return build


def head(classes: int, dim: int) -> dict[str, torch.Tensor]:
    return {"head.weight": torch.zeros(classes, dim), "head.bias": torch.zeros(classes)}


def of_this_fit(checkpoint: dict, cfg, tmp: Path) -> dict:
    """`checkpoint` as if this very fit wrote it (its fingerprint), so that resuming reaches the
    weight checks: another fit's checkpoint is not resumed at all (test_reliability)."""
    return {**checkpoint, "callbacks": {TrainedOn.__qualname__: {"fingerprint": fit_fingerprint(cfg, tmp / "prepared")}}}


def resume_weights_that_do_not_fit(tmp: Path):
    """A last.ckpt of this fit holding a 5-class head of another backbone (damaged, or written by
    other code under the same fingerprint): refused up front, before anything is trained or written."""
    ckpt = tmp / "in" / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    cfg = topics_cfg("strategy=finetune_last_n", "strategy.max_epochs=1", *QUICK_BUDGET)
    torch.save(of_this_fit({"epoch": 0, "state_dict": head(5, 384)}, cfg, tmp), ckpt)
    return (lambda: train.run(cfg, tmp / "prepared", None, ckpt.parents[1])), str(ckpt)


def resume_after_the_backbone_changed(tmp: Path):
    """A last.ckpt of this very config that left out its frozen weights, written when one of them
    held another value than the rebuilt backbone's (its files changed since): refused up front,
    not resumed with weights the run never trained with."""
    cfg = topics_cfg("strategy=finetune_last_n", "strategy.max_epochs=1", *QUICK_BUDGET)
    module = build_finetune_module(cfg, resolve(cfg), 3)
    frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
    checkpoint = {"epoch": 0, "state_dict": {k: v.clone() for k, v in module.state_dict().items()}}
    checkpoint["state_dict"][frozen[0]] += 1.0
    leave_out(checkpoint, frozen)
    ckpt = tmp / "in" / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save(of_this_fit(checkpoint, cfg, tmp), ckpt)
    return (lambda: train.run(cfg, tmp / "prepared", None, ckpt.parents[1])), str(ckpt)


CASES = [
    # data: files
    pytest.param(Case(table(None), DataError, ("not found", "data.path")), id="missing-file"),
    pytest.param(Case(table(b""), DataError, ("empty file",)), id="empty-file"),
    pytest.param(Case(table(b"text,topic\n"), DataError, ("no usable rows", "no rows")), id="header-only"),
    pytest.param(Case(table("text,topic\ncaf\xe9 au lait,food\n".encode("latin-1")), DataError,
                      ("not UTF-8", "0xe9")), id="latin-1-encoding"),
    pytest.param(Case(table("text,topic\nhello,a\n".encode("utf-16")), DataError, ("not UTF-8",)),
                 id="utf-16-encoding"),
    pytest.param(Case(table(b"text,topic\n" + frame(source="bbc").to_csv(index=False, header=False).encode()),
                      DataError, ("more fields than the header",)), id="more-fields-than-header"),
    pytest.param(Case(table(topic_frame().rename(columns={"text": "body"})), DataError,
                      ("'text'", "data.text_column", "body")), id="missing-text-column"),
    pytest.param(Case(table(topic_frame().rename(columns={"topic": "category"})), DataError,
                      ("'topic'", "data.label_column", "category")), id="missing-label-column"),
    # data: rows
    pytest.param(Case(table(frame(text=["", "   ", "\t"] * 20)), DataError,
                      ("no usable rows", "60 with an empty text")), id="blank-texts"),
    pytest.param(Case(table(frame(topic=None)), DataError, ("no usable rows", "60 without a label")),
                 id="nan-labels"),
    pytest.param(Case(table(topic_frame().query("topic == 'sport'")), DataError,
                      ("at least 2 classes", "sport")), id="single-class"),
    pytest.param(Case(table(fewer("tech", 2)), DataError, ("'tech' has 2", "at least 3")),
                 id="class-too-small-to-stratify"),
    # data: sizes and fractions
    pytest.param(Case(table(topic_frame(), "data.train_size=0", train_size=0), DataError, ("> 0",)),
                 id="train-size-zero"),
    pytest.param(Case(table(topic_frame(), "data.train_size=-5", train_size=-5), DataError, ("> 0",)),
                 id="train-size-negative"),
    pytest.param(Case(table(topic_frame(), "data.train_size=500", train_size=500), DataError, ("only",)),
                 id="train-size-above-available"),
    pytest.param(Case(table(topic_frame(), "data.train_size=1.5", train_size=1.5), DataError, ("(0, 1]",)),
                 id="train-fraction-above-one"),
    pytest.param(Case(table(topic_frame(), "data.val_fraction + data.test_fraction", val_fraction=0.5,
                            test_fraction=0.5), DataError, ("< 1",)), id="held-out-fractions-sum-to-one"),
    pytest.param(Case(overrides("data.val_fraction=0"), ConfigError, ("data.val_fraction=0", "(0, 1)")),
                 id="val-fraction-zero"),
    pytest.param(Case(overrides("data.test_fraction=1.5"), ConfigError, ("data.test_fraction=1.5", "(0, 1)")),
                 id="test-fraction-above-one"),
    pytest.param(Case(overrides("backbone=efficientnet_lite0", "data=fashion_mnist", "backbone.pooling=cls"),
                      ConfigError, ("backbone.pooling='cls'", "only 'mean'")), id="unsupported-pooling"),
    pytest.param(Case(overrides("extract.batch_size=0"), ConfigError, ("extract.batch_size=0", "> 0")),
                 id="extract-batch-size-zero"),
    pytest.param(Case(unknown_source, DataError, ("unknown", "bbc_news")), id="unknown-data-source-in-api"),
    # images
    pytest.param(Case(images(lambda png: png[: len(png) // 2]), DataError, ("cannot be read as an image",)),
                 id="truncated-image"),
    pytest.param(Case(images(lambda png: b"\x89PNG\r\n\x1a\n not really one"), DataError,
                      ("cannot be read as an image",)), id="corrupt-image"),
    pytest.param(Case(images(None, count=0), DataError, ("no images found",)), id="image-folder-without-images"),
    pytest.param(Case(weights_file(lambda p: p.write_text("junk\n")), ConfigError,
                      ("not a torch weights file", "torch.load")), id="image-weights-not-a-checkpoint"),
    pytest.param(Case(weights_file(lambda p: torch.save({"w": torch.zeros(2)}, p)), ConfigError,
                      ("not EfficientNet-Lite0 weights", "tensors missing", "1 not its own")), id="image-weights-of-another-network"),
    # backbones: what the model itself holds
    pytest.param(Case(text_backbone("backbone.max_length=65"), ConfigError, ("positions for 64 tokens", "<= 64")),
                 id="max-length-beyond-the-model-positions"),
    # prediction: the file given to `transferlab predict`
    pytest.param(Case(predicting(b""), DataError, ("empty file",), trained=True), id="predict-empty-file"),
    pytest.param(Case(predicting(b"text\n"), DataError, ("no rows",), trained=True), id="predict-header-only"),
    pytest.param(Case(predicting(pd.DataFrame({"id": range(4), "text": ["The striker scored", "", "   ", "\t"]})),
                      DataError, ("3 of 4 rows have an empty 'text'", "data rows 2, 3, 4"), trained=True),
                 id="predict-blank-texts"),
    pytest.param(Case(predicting(b"text,id\nThe striker scored,1\n,2\n"), DataError,
                      ("1 of 2 rows have an empty 'text'", "data rows 2"), trained=True), id="predict-nan-text"),
    pytest.param(Case(predicting(b"text\nsport,The striker scored\ntech,The new smartphone\n"), DataError,
                      ("more fields than the header",), trained=True), id="predict-more-fields-than-header"),
    pytest.param(Case(predicting("text\ncaf\xe9 au lait\n".encode("latin-1")), DataError,
                      ("not UTF-8", "0xe9"), trained=True), id="predict-latin-1-encoding"),
    pytest.param(Case(predicting(topic_frame().rename(columns={"text": "body"})), DataError,
                      ("no column 'text'", "body"), trained=True), id="predict-missing-column"),
    pytest.param(Case(predicting(topic_frame(), column="headline"), DataError,
                      ("no column 'headline'", "text"), trained=True), id="predict-missing-named-column"),
    # prediction: the Python API's own list
    pytest.param(Case(predicting_items(["The striker scored", "  "]), DataError,
                      ("1 of 2 items are blank", "positions 1"), trained=True), id="predict-blank-item"),
    pytest.param(Case(predicting_items(["The striker scored", None, 3]), DataError,
                      ("2 of 3 items are blank or not a str", "positions 1, 2"), trained=True),
                 id="predict-item-not-text"),
    pytest.param(Case(predicting_items([]), DataError, ("no items",), trained=True), id="predict-empty-list"),
    # configuration
    pytest.param(Case(overrides("data=nope"), ConfigError, ("unknown data", "bbc_news")), id="unknown-data"),
    pytest.param(Case(overrides("backbone=nope"), ConfigError, ("unknown backbone", "minilm")),
                 id="unknown-backbone"),
    pytest.param(Case(overrides("strategy=nope"), ConfigError, ("unknown strategy", "finetune_full")),
                 id="unknown-strategy"),
    pytest.param(Case(overrides("backbone.name=resnet"), ConfigError, ("'resnet'", "unknown", "minilm")),
                 id="unknown-backbone-name"),
    pytest.param(Case(overrides("strategy.lrr=0.1"), ConfigError, ("unknown key", "did you mean strategy.lr")),
                 id="misspelt-key"),
    pytest.param(Case(params_file(misspell), ConfigError, ("data.trian_size",)), id="misspelt-key-in-params"),
    pytest.param(Case(params_file(None), ConfigError, ("not found",)), id="missing-params-file"),
    pytest.param(Case(overrides("strategy.max_epochs=ten"), ConfigError, ("'ten'", "Integer")),
                 id="wrong-type"),
    pytest.param(Case(overrides("strategy.lr=-0.001"), ConfigError, ("strategy.lr=-0.001", "> 0")),
                 id="negative-learning-rate"),
    pytest.param(Case(overrides("strategy.max_epochs=0"), ConfigError, ("strategy.max_epochs=0", "> 0")),
                 id="zero-epochs"),
    # a comparison's grid: every train size checked before its first cell trains, named as the user wrote it
    pytest.param(Case(overrides("compare.train_sizes=[50,alll]"), ConfigError,
                      ("compare.train_sizes[1]='alll'", "must be a count, a fraction in (0, 1] or 'all'")),
                 id="grid-train-size-not-a-size"),
    pytest.param(Case(overrides("compare.train_sizes=[50,1.5]"), ConfigError,
                      ("compare.train_sizes[1]=1.5", "a fraction must be in (0, 1]")),
                 id="grid-train-fraction-above-one"),
    pytest.param(Case(overrides("compare.tie_margin=-1"), ConfigError, ("compare.tie_margin=-1.0", ">= 0")),
                 id="negative-tie-margin"),
    # LP-FT's probe is a whole head strategy (conf/strategy/linear_probe.yaml at strategy.probe), checked as one
    pytest.param(Case(overrides("strategy=lp_ft", "strategy.probe.lrr=0.1"), ConfigError,
                      ("unknown key", "did you mean strategy.probe.lr")), id="misspelt-probe-key"),
    pytest.param(Case(overrides("strategy=lp_ft", "strategy.probe.max_epochs=0"), ConfigError,
                      ("strategy.probe.max_epochs=0", "> 0")), id="zero-probe-epochs"),
    pytest.param(Case(overrides("strategy=lp_ft", "strategy.probe.kind=finetune"), ConfigError,
                      ("strategy.probe.kind='finetune'", "head strategy")), id="probe-not-a-head-strategy"),
    pytest.param(Case(overrides("strategy=lp_ft", "strategy.probe_first=true"), ConfigError,
                      ("unknown key", "did you mean strategy.probe")), id="removed-probe-first-key"),
    # prepared data, runs, checkpoints, outputs
    pytest.param(Case(label_unseen_in_train, DataError, ("'tech'", "never occurs in train.parquet")),
                 id="label-unseen-in-train"),
    pytest.param(Case(trained_run(head(5, 384)), DataError, ("another model", "(5, 384)", "(3, 384)")),
                 id="weights-of-another-label-count"),
    pytest.param(Case(trained_run(head(3, 1280)), DataError, ("another model", "(3, 1280)", "(3, 384)")),
                 id="weights-of-another-backbone"),
    pytest.param(Case(trained_run(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":"), DataError,
                      ("cannot be read as safetensors",)), id="truncated-weights"),
    pytest.param(Case(resume_weights_that_do_not_fit, DataError, ("another model", "head.weight is (5, 384)")),
                 id="resume-from-last-ckpt-whose-weights-do-not-fit"),
    pytest.param(Case(resume_after_the_backbone_changed, DataError,
                      ("1 of the", "frozen weights it left out differ", "changed since")),
                 id="resume-after-the-backbone-changed"),
    pytest.param(Case(unwritable_output, DataError, ("cannot write", "is a file, not a folder")),
                 id="output-path-not-writable"),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_in_one_line_and_writes_nothing(case: Case, tmp_path: Path, earlier: Path,
                                                        request: pytest.FixtureRequest):
    shutil.copytree(earlier, tmp_path / "prepared")  # an earlier run's artifact, to be left alone
    if case.trained:
        shutil.copytree(request.getfixturevalue("trained"), tmp_path / "trained")
    (tmp_path / "in").mkdir()
    act, named = case.build(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(case.error) as raised:
        act()
    message = str(raised.value)
    assert "\n" not in message and message.strip() == message, message
    for part in (named, *case.says):
        assert part in message, f"{part!r} not in {message!r}"
    assert snapshot(tmp_path) == before


def test_the_names_checked_in_config_are_the_registries():
    """config.py names sources and backbones without importing them; the registries must agree."""
    from transferlab.backbones import BACKBONES
    from transferlab.data.sources import SOURCES

    assert set(TEXT_SOURCES + IMAGE_SOURCES) == set(SOURCES)
    assert set(TEXT_BACKBONES + IMAGE_BACKBONES) == set(BACKBONES)


@pytest.mark.parametrize("budget", [None, "1h"], ids=["whole-grid", "budgeted"])
def test_a_grid_size_the_data_cannot_hold_stops_it_before_any_cell_trains(tmp_path, budget):
    """How many training rows the data has is known once it is prepared: every size's data is
    prepared before the first cell trains, so the grid stops with no run folder (not after the
    n12 cell has trained), naming the compare.train_sizes entry the user wrote."""
    cfg = topic_config(tmp_path, "compare.strategies=[linear_probe]", "compare.train_sizes=[12,500]",
                       "compare.seeds=[0,1]", f"compare.budget={budget or 'null'}")
    with pytest.raises(DataError) as raised:
        run_grid(cfg, tmp_path / "out")
    assert str(raised.value) == "compare.train_sizes[1]=500: only 42 training rows are available"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("budget", [None, "1h"], ids=["whole-grid", "budgeted"])
def test_two_grid_sizes_that_give_the_same_rows_stop_it_before_any_cell_trains(tmp_path, budget):
    """42 and 'all' are the same 42 training rows: the same runs twice, which the report would pair
    as one size's evidence (and score its lead as 0); the grid stops before any cell trains."""
    cfg = topic_config(tmp_path, "compare.strategies=[linear_probe]", "compare.train_sizes=[12,42,all]",
                       "compare.seeds=[0]", f"compare.budget={budget or 'null'}")
    with pytest.raises(ConfigError) as raised:
        run_grid(cfg, tmp_path / "out")
    assert str(raised.value) == ("compare.train_sizes[2]='all': 42 training rows, as compare.train_sizes[1]=42 "
                                 "gives; list that size once")
    assert not (tmp_path / "out").exists()


def roberta_style(root: Path, positions: int) -> Path:
    """The tiny encoder's tokenizer on a tiny RoBERTa, whose positions start at padding_idx + 1."""
    from transformers import RobertaConfig, RobertaModel

    shutil.copytree(tiny_encoder_dir(), root)
    config = RobertaConfig(vocab_size=len(vocabulary()), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=positions, pad_token_id=0)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(root)
    return root


@pytest.mark.parametrize("family, limit", [("bert", 64), ("roberta", 65)])
def test_a_max_length_the_model_holds_runs_and_one_more_is_refused(tmp_path, family, limit):
    """The limit is the model's own: a text filling backbone.max_length at the limit goes through
    the forward pass; one token more is refused when the backbone is built. RoBERTa's table of 66
    holds 65 tokens (padding_idx=0, positions from 1), BERT's table of 64 holds 64."""
    from transferlab.backbones.hf_encoder import HFEncoder

    location = str(tiny_encoder_dir() if family == "bert" else roberta_style(tmp_path / "roberta", 66))
    encoder = HFEncoder(location, max_length=limit)
    encoded = encoder.encode(["report " * (2 * limit)])
    assert len(encoded[0]) == limit
    assert encoder(**encoder.collate(encoded)).shape == (1, 16)
    with pytest.raises(ConfigError, match=rf"^backbone.max_length={limit + 1}: .* positions for {limit} tokens"):
        HFEncoder(location, max_length=limit + 1)


# --- a feature cache damaged on disk: detected and rebuilt, never trusted -------------------------

@pytest.fixture(scope="module")
def features(tmp_path_factory, earlier):
    root = tmp_path_factory.mktemp("features")
    cfg = topics_cfg()
    entry = extract.run(cfg.backbone, cfg.extract, earlier, root)
    good = {s: load_file(entry / f"{s}.safetensors")["features"].clone() for s in ("train", "val", "test")}
    return cfg, root, entry, good


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_last_byte(path: Path) -> None:
    """A bit of rot inside the tensor data: the file still parses, its numbers are wrong."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, where, reembeds", [
    (truncate, "val.safetensors", False),
    (flip_last_byte, "test.safetensors", False),
    (flip_last_byte, "store", True),
], ids=["truncated-split-file", "flipped-byte-in-split-file", "flipped-byte-in-item-store"])
def test_damaged_feature_cache_is_rebuilt_not_trusted(features, earlier, damage, where, reembeds):
    cfg, root, entry, good = features
    if where == "store":  # the entry must miss too, or the store is never read
        damage(root / "items" / extract.backbone_key(cfg.backbone, cfg.extract) / "features.safetensors")
        shutil.rmtree(entry)
    else:
        damage(entry / where)
    again = extract.run(cfg.backbone, cfg.extract, earlier, root)
    assert again == entry
    for split, expected in good.items():
        assert torch.allclose(load_file(entry / f"{split}.safetensors")["features"], expected, atol=1e-5)
    embedded = json.loads((entry / "meta.json").read_text())["items_embedded"]
    assert embedded == (sum(len(v) for v in good.values()) if reembeds else 0)


# --- as the user sees it: flows failing inside Prefect, one before Hydra, one DVC stage ---------

def adapt(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The flow with the user's overrides; its run dir and caches kept under tmp_path."""
    return subprocess.run(
        [PYTHON, "flows/adapt.py", *overrides,
         f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def error_line(proc: subprocess.CompletedProcess, prefix: str = "error: ") -> str:
    """Non-zero exit, and the whole of stderr, blank lines aside, is one line: the error."""
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(prefix), proc.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_flow_csv_without_the_label_column(tmp_path):
    """Bad data found inside a Prefect task: one line, exit 2, no run folder, nothing cached."""
    csv = tmp_path / "untitled.csv"
    topic_frame().rename(columns={"topic": "category"}).to_csv(csv, index=False)
    line = error_line(adapt(tmp_path, "data=csv", f"data.path={csv}", "data.label_column=topic"))
    assert str(csv) in line and "'topic'" in line and "data.label_column" in line and "category" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("strategy", ["linear_probe", "finetune_full"])
def test_flow_max_length_beyond_the_model_positions(tmp_path, strategy):
    """Texts longer than the encoder's 64 positions at backbone.max_length=128 failed deep in its
    forward pass, in a torch traceback; now one line when the backbone loads (for extraction, or
    for fine-tuning inside the train task, whose error the flow raises), and no run folder."""
    csv = tmp_path / "long.csv"
    topic_frame().assign(text=lambda f: (f.text + " ") * 8).to_csv(csv, index=False)
    line = error_line(adapt(tmp_path, f"strategy={strategy}", "data=csv", f"data.path={csv}", "data.label_column=topic",
                            "backbone=hf_encoder", f"backbone.model={tiny_encoder_dir()}", "backbone.max_length=128"))
    assert line == (f"error: backbone.max_length=128: the model at {tiny_encoder_dir()} has positions for 64 "
                    "tokens; set backbone.max_length <= 64")
    assert not (tmp_path / "run").exists() and not list((tmp_path / "cache").rglob("*.safetensors"))


# runs a flow script as `python flows/<name>.py` would, then says which heavy modules it had imported
IMPORTED_BY = """import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print([m for m in ("transferlab.flows", "prefect", "torch") if m in sys.modules])
"""


@pytest.mark.parametrize("script", ["adapt", "compare", "serve"])
def test_flow_missing_data_file_stops_before_prefect_and_torch_load(tmp_path, script):
    """A missing data.path was found by prepare, inside the flow, after Prefect's server had started
    (20-80 s); each flow script now checks it (prepare's own check, its words) before the flows import
    Prefect and torch."""
    missing = tmp_path / "nope.csv"
    proc = subprocess.run([PYTHON, "-c", IMPORTED_BY, f"flows/{script}.py", "data=csv", f"data.path={missing}",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert error_line(proc) == f"error: {missing}: data file not found (data.path)"
    assert proc.returncode == 2 and proc.stdout.strip() == "[]", proc.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_flow_misspelt_key(tmp_path):
    """A misspelt override stops the flow before Hydra, with the key it probably meant."""
    line = error_line(adapt(tmp_path, "strategy.lrr=0.1"))
    assert line == "error: strategy.lrr: unknown key; did you mean strategy.lr?"
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_dvc_prepare_stage_misspelt_key_leaves_the_earlier_artifacts(tmp_path, earlier):
    """`transferlab prepare` (what dvc.yaml runs) on a bad params.yaml: the prepared data stays."""
    params = OmegaConf.to_container(OmegaConf.load(ROOT / "params.yaml"))
    params["paths"]["artifacts_dir"] = str(tmp_path / "artifacts")
    misspell(params)
    OmegaConf.save(params, tmp_path / "params.yaml")
    shutil.copytree(earlier, tmp_path / "artifacts" / "data")
    before = snapshot(tmp_path)
    proc = subprocess.run([str(Path(PYTHON).parent / "transferlab"), "prepare", "--params",
                           str(tmp_path / "params.yaml")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    line = error_line(proc, prefix="transferlab prepare: error: ")
    assert str(tmp_path / "params.yaml") in line and "data.trian_size" in line
    assert snapshot(tmp_path) == before


def test_cli_predict_on_a_header_only_csv(tmp_path, trained):
    """`transferlab predict` as the user runs it: one error line, exit 2, no predictions file."""
    new = tmp_path / "new.csv"
    new.write_text("text\n")
    out = tmp_path / "out" / "predictions.csv"
    before = snapshot(tmp_path)
    proc = subprocess.run([str(Path(PYTHON).parent / "transferlab"), "predict", str(trained), str(new),
                           "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    line = error_line(proc, prefix="transferlab predict: error: ")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(new) in line and "no rows" in line
    assert not out.exists() and snapshot(tmp_path) == before
