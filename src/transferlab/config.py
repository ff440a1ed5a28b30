"""Structured config: the schema every composed config (flows) and params.yaml (DVC) is checked against.

The schema is applied after composition rather than through Hydra's ConfigStore, because DVC
composes conf/ itself for `dvc exp run` and cannot see a ConfigStore. Either way a misspelt key
or a wrong type fails before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "bbc_news"
    source: str = "bbc_news"  # a key of transferlab.data.sources.SOURCES
    path: Optional[str] = None  # file for `csv`; optional override of a packaged data set's location
    text_column: str = "text"
    label_column: str = "label"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    train_size: Any = None  # None/"all", a count (int > 1) or a fraction in (0, 1]


@dataclass
class BackboneConfig:
    name: str = "minilm"
    model: str = "sentence-transformers/all-MiniLM-L6-v2"  # hub id or local path
    local_package: Optional[str] = None  # a package that ships the weights; used when installed
    max_length: int = 128
    pooling: str = "mean"
    normalize: bool = True


@dataclass
class ExtractConfig:
    batch_size: int = 32
    precision: str = "fp32"  # fp32 | bf16


@dataclass
class StrategyConfig:
    name: str = "linear_probe"
    kind: str = "head"  # head: trained on cached features | finetune: backbone + head
    trainable: str = "head"  # head | all
    lr: float = 1e-2
    head_lr: Optional[float] = None  # finetune: the new head's learning rate (None = lr)
    weight_decay: float = 0.0
    batch_size: int = 32
    max_epochs: int = 200
    patience: int = 10
    warmup_ratio: float = 0.0
    gradient_clip_val: Optional[float] = None


@dataclass
class TrainerConfig:
    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "cpu"
    devices: int = 1
    precision: str = "32-true"
    deterministic: bool = True
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    log_every_n_steps: int = 10


@dataclass
class PathsConfig:
    cache_dir: str = ".cache/transferlab"  # content-addressed prepared data and features (flows)
    artifacts_dir: str = "artifacts"  # the fixed layout that dvc.yaml declares


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: list[str] | None = None, conf_dir: Path = CONF_DIR) -> DictConfig:
    """conf/config.yaml with Hydra overrides, as `dvc exp run` composes it into params.yaml."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
        return hydra_compose(config_name="config", overrides=overrides or [])


def check_group_choices(overrides: list[str]) -> None:
    """`strategy=nope` -> one line naming the options, before Hydra prints its multi-line report."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        group = CONF_DIR / key
        if not sep or not group.is_dir() or value.startswith(("choice(", "range(", "glob(")):
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for choice in value.strip("[]").split(","):
            if choice.strip() not in options:
                raise ConfigError(f"{key}={choice.strip()}: unknown {key}; choose one of {', '.join(options)}")


def checked(cfg: DictConfig | dict, source: str) -> DictConfig:
    """`cfg` merged onto the schema, then value-checked; a one-line ConfigError naming `source`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    except Exception as exc:  # omegaconf's messages span lines; keep the first, name the key
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{source}: {key + ': ' if key else ''}{str(exc).splitlines()[0]}") from None
    validate(merged)
    return merged


def validate(cfg: DictConfig) -> None:
    """Value checks the type system cannot express; raises a one-line ConfigError."""
    s = cfg.strategy
    checks = [
        (s.kind in ("head", "finetune"), "strategy.kind", s.kind, "must be 'head' or 'finetune'"),
        (s.trainable in ("head", "all"), "strategy.trainable", s.trainable, "must be 'head' or 'all'"),
        (s.lr > 0, "strategy.lr", s.lr, "must be > 0"),
        (s.head_lr is None or s.head_lr > 0, "strategy.head_lr", s.head_lr, "must be > 0"),
        (s.max_epochs > 0, "strategy.max_epochs", s.max_epochs, "must be > 0"),
        (s.batch_size > 0, "strategy.batch_size", s.batch_size, "must be > 0"),
        (0 <= s.warmup_ratio < 1, "strategy.warmup_ratio", s.warmup_ratio, "must be in [0, 1)"),
        (cfg.extract.precision in ("fp32", "bf16"), "extract.precision", cfg.extract.precision,
         "must be 'fp32' or 'bf16'"),
        (0 < cfg.data.val_fraction < 1, "data.val_fraction", cfg.data.val_fraction, "must be in (0, 1)"),
        (0 < cfg.data.test_fraction < 1, "data.test_fraction", cfg.data.test_fraction, "must be in (0, 1)"),
    ]
    for ok, key, value, why in checks:
        if not ok:
            raise ConfigError(f"{key}={value!r}: {why}")


def load_params(path: str | Path = "params.yaml") -> DictConfig:
    """The composed config as DVC stages see it: params.yaml checked against the schema."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    return checked(OmegaConf.load(path), str(path))


def write_params(path: str | Path = "params.yaml", conf_dir: Path = CONF_DIR) -> None:
    """Regenerate params.yaml from conf/'s defaults (what `dvc exp run` also does)."""
    from transferlab.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(PARAMS_HEADER + OmegaConf.to_yaml(compose(conf_dir=conf_dir)))


PARAMS_HEADER = ("# Generated from conf/ (python -m transferlab.config); `dvc exp run` regenerates it.\n"
                 "# Edit conf/, not this file: tests/test_params.py checks the two agree.\n")


if __name__ == "__main__":
    write_params()
