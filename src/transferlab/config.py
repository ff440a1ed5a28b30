"""Structured config: the schema every composed config (flows) and params.yaml (DVC) is checked against.

The schema is applied after composition rather than through Hydra's ConfigStore, because DVC
composes conf/ itself for `dvc exp run` and cannot see a ConfigStore. Either way a misspelt key
or a wrong type fails before any work starts.
"""

from __future__ import annotations

import difflib
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError, DataError, TransferlabError, first_line


@dataclass
class DataConfig:
    name: str = "bbc_news"
    source: str = "bbc_news"  # a key of transferlab.data.sources.SOURCES
    path: Optional[str] = None  # file for `csv`; optional override of a packaged data set's location
    text_column: str = "text"
    label_column: str = "label"
    val_fraction: float = 0.1
    val_max_rows: Optional[int] = 1000  # at most this many validation rows (null: no cap)
    test_fraction: float = 0.2
    train_size: Any = None  # None/"all", a count (int > 1) or a fraction in (0, 1]
    limit: Optional[int] = None  # stratified subsample of the cleaned data before splitting (None = all)


TEXT_SOURCES = ("bbc_news", "tweet_sentiment", "csv")  # the keys of transferlab.data.sources.SOURCES,
IMAGE_SOURCES = ("fashion_mnist", "mnist", "image_folder")  # named here so checking needs no pandas
TEXT_BACKBONES = ("minilm", "hf_encoder")  # the keys of transferlab.backbones.BACKBONES, named here
IMAGE_BACKBONES = ("efficientnet_lite0",)  # so checking a config needs no torch; a test keeps them equal


@dataclass
class BackboneConfig:
    name: str = "minilm"
    model: Optional[str] = "sentence-transformers/all-MiniLM-L6-v2"  # hub id or local path (hf_encoder: null until set)
    local_package: Optional[str] = None  # a package that ships the weights; used when installed
    max_length: Optional[int] = 128  # text: tokens per input
    pooling: str = "mean"
    normalize: bool = True
    image_size: Optional[int] = None  # images: resized to image_size × image_size pixels
    pretrained: bool = True  # false: the same architecture, randomly initialised (a baseline)


@dataclass
class ExtractConfig:
    batch_size: int = 32  # every forward-only pass over raw inputs (extraction; validation, evaluation, prediction)
    precision: str = "auto"  # auto | fp32 | bf16 (the frozen backbone's weights in bf16): transferlab.precision


@dataclass
class HeadConfig:
    type: str = "linear"  # linear | mlp
    hidden_dim: int = 256  # mlp only
    dropout: float = 0.0  # mlp only


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: Optional[list[str]] = None  # None: the backbone's declared default


@dataclass
class StrategyConfig:
    name: str = "linear_probe"
    kind: str = "head"  # head: trained on cached features | finetune: backbone + head
    trainable: str = "head"  # head | all | last_n | lora: what trains from the first epoch
    last_n: int = 2  # trainable=last_n: the top N layer groups
    layer_decay: Optional[float] = None  # LLRD: each lower group's lr = the one above's x this
    unfreeze_every: Optional[int] = None  # gradual unfreezing: one more group every k epochs
    head: HeadConfig = field(default_factory=HeadConfig)
    # LP-FT: a head strategy (conf/strategy/linear_probe.yaml, composed at `probe`) trained first on
    # the cached features; fine-tuning starts from its head. Checked as a StrategyConfig of its own.
    probe: Optional[Any] = None
    lora: LoraConfig = field(default_factory=LoraConfig)
    optimizer: str = "adamw"  # adamw (mini-batches) | lbfgs (heads only: full batch to convergence, L2 from C)
    # lbfgs: scikit-learn's C (inverse L2 strength: C * sum of losses + |W|^2 / 2); a list: each is
    # trained to convergence and the best on validation accuracy (then loss) is kept
    C: Any = 1.0
    # lbfgs: a solve ends when its largest gradient entry is below this: scikit-learn's tol, the same test
    tol: float = 1e-4
    lr: float = 1e-2
    head_lr: Optional[float] = None  # finetune: the new head's learning rate (None = lr)
    weight_decay: float = 0.0
    batch_size: int = 32
    max_epochs: int = 200
    patience: int = 10  # validations without a better val_loss before stopping (after min_steps)
    # fine-tuning: at least this many optimiser steps, whatever max_epochs says; no checkpoint from
    # before it is chosen, early stopping starts after it
    min_steps: int = 0
    val_every_n_steps: int = 1  # validate about every N optimiser steps (in whole epochs)
    warmup_ratio: float = 0.0
    gradient_clip_val: Optional[float] = None


@dataclass
class TrainerConfig:
    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1  # a count, -1 (all) or "auto"; more than one needs strategy ddp_spawn
    strategy: str = "auto"  # auto (one process) | ddp_spawn (trainer=ddp); see SPAWN_STRATEGY
    precision: str = "auto"  # auto (bf16-mixed where bf16 is native, else 32-true) or any of Lightning's
    deterministic: bool = True
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    log_every_n_steps: int = 10
    max_time: Optional[str] = None  # "DD:HH:MM:SS": a fit stops there (the budget planner sets it per cell)


# The Lightning loggers a `logger` config may name (conf/logger/), each with the keys it may set
# (save_dir is the run's logs folder, set by the stage) and the package it needs, named here so
# checking needs no torch; a test keeps the keys equal to the classes' signatures.
LOGGERS = {
    "lightning.pytorch.loggers.CSVLogger": (None, ("name", "version", "prefix", "flush_logs_every_n_steps")),
    "lightning.pytorch.loggers.TensorBoardLogger": ("tensorboardX", ("name", "version", "log_graph",
                                                                      "default_hp_metric", "prefix", "sub_dir")),
    "lightning.pytorch.loggers.MLFlowLogger": ("mlflow", ("experiment_name", "run_name", "tracking_uri", "tags",
                                                          "log_model", "prefix", "artifact_location", "run_id",
                                                          "synchronous")),
}
# Lightning's `ddp` re-executes the whole command line in every child process: a flow or DVC stage
# would run again from the start in each. `ddp_spawn` runs only `fit` in the children.
SPAWN_STRATEGY = "ddp_spawn"


@dataclass
class CompareConfig:
    strategies: list[str] = field(default_factory=lambda: ["linear_probe", "finetune_full"])
    train_sizes: list[Any] = field(default_factory=lambda: [50, 200])
    seeds: list[int] = field(default_factory=lambda: [0])
    workers: int = 1  # runs at once: threads in one process, or Dask worker processes
    task_runner: str = "threads"  # threads (Prefect's thread pool) | dask (a local Dask cluster)
    tie_margin: float = 0.005
    budget: Any = None  # null: the whole grid | a duration ("15m", "90s", "1h30m"): transferlab.planner
    # Hydra overrides of the strategy section applied to every cell, after its conf/strategy/<name>.yaml,
    # by every front end (flows/compare.py, dvc.yaml's compare matrix, the API): the one rule for
    # "the user's settings + the strategy's config". Only `strategy.*` keys.
    overrides: list[str] = field(default_factory=list)


TASK_RUNNERS = ("threads", "dask")


@dataclass
class ScheduleConfig:
    """flows/serve.py: the compare flow as a deployment on a Prefect server, run on a cron schedule."""

    name: str = "scheduled-compare"  # the deployment: `prefect deployment run compare/<name>`
    cron: str = "0 3 * * *"  # minute hour day-of-month month day-of-week
    timezone: str = "UTC"  # IANA name the cron string is read in
    out_dir: str = "reports/scheduled"  # every run rewrites this report in place


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
    # a Lightning logger (conf/logger/): keys vary by class, so checked against LOGGERS in validate()
    # conf/logger/csv.yaml by default; empty (a run folder's config.yaml from before loggers were
    # configurable, read back by `transferlab predict`): no logger
    logger: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    seed: int = 0
    optimized_metric: str = "val_accuracy"  # what flows/adapt.py returns to a Hydra sweeper (Optuna)


CONF_DIR = (Path(__file__).parent / "conf").resolve()  # the checkout's conf/, or the installed copy


def compose(overrides: list[str] | None = None, conf_dir: Path = CONF_DIR) -> DictConfig:
    """conf/config.yaml with Hydra overrides, as `dvc exp run` composes it into params.yaml.

    Inside a running Hydra app (a flow script) Hydra's own compose API is already initialised
    on conf/ and is used as it is. Unknown options and keys fail first with one line of ours;
    whatever else Hydra rejects is cut to its first line."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    check_overrides(overrides, conf_dir)
    try:
        if GlobalHydra.instance().is_initialized():
            return hydra_compose(config_name="config", overrides=overrides)
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
            return hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"overrides {' '.join(overrides)}: {first_line(exc)}") from None


def check_overrides(overrides: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Command-line overrides checked before Hydra sees them: unknown options, misspelt keys."""
    check_group_choices(overrides, conf_dir)
    check_override_keys(overrides, conf_dir)


@functools.lru_cache(maxsize=1)
def override_parser():
    """Hydra's override parser; building its grammar takes a while, so once per process."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parsed(overrides: list[str]) -> list:
    """Hydra's own parse of command-line overrides; a syntax error in one line naming it."""
    from hydra.errors import OverrideParseException

    if not overrides:
        return []
    try:
        return override_parser().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(f"overrides {' '.join(overrides)}: {first_line(exc)}") from None


def override_values(override) -> list:
    """The value(s) an override sets: a sweep's choices, else its one value (a list stays a list)."""
    if override.is_discrete_sweep():
        return list(override.sweep_string_iterator())
    value = override.value()
    return value if isinstance(value, list) else [value]


def check_group_choices(overrides: list[str], conf_dir: Path = CONF_DIR) -> None:
    """`strategy=nope` -> one line naming the options, before Hydra prints its multi-line report."""
    for override in parsed(overrides):
        group = Path(conf_dir) / override.key_or_group
        if override.is_delete() or not group.is_dir() or (override.is_sweep_override()
                                                          and not override.is_discrete_sweep()):
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for choice in override_values(override):
            if str(choice) not in options:
                key = override.key_or_group
                raise ConfigError(f"{key}={choice}: unknown {key}; choose one of {', '.join(options)}")


def check_override_keys(overrides: list[str], conf_dir: Path = CONF_DIR) -> None:
    """`strategy.lrr=0.1` -> one line naming the key and the nearest real one, where Hydra would
    print a multi-line report. `+key=` additions and hydra's own keys are left to Hydra/`checked`."""
    schema = OmegaConf.structured(Config)
    for override in parsed(overrides):
        key = override.key_or_group
        if override.is_add() or override.is_delete() or override.package is not None \
                or key.startswith(("hydra", "logger.")) or (Path(conf_dir) / key).is_dir():
            continue  # logger keys depend on its class: validate()
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(schema, parent) if parent else schema
        if parent.endswith("probe") and node is None:  # LP-FT's probe is a strategy of its own
            node = OmegaConf.structured(StrategyConfig)
        if isinstance(node, DictConfig) and leaf not in node:
            close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1)
            hint = f"; did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
            raise ConfigError(f"{key}: unknown key{hint}")


def checked(cfg: DictConfig | dict, source: str) -> DictConfig:
    """`cfg` merged onto the schema, then value-checked; a one-line ConfigError naming `source`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    except Exception as exc:  # omegaconf's messages span lines; keep the first, name the key
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{source}: {key + ': ' if key else ''}{str(exc).splitlines()[0]}") from None
    if merged.strategy.probe is not None:
        merged.strategy.probe = typed(StrategyConfig, merged.strategy.probe, source, "strategy.probe")
    validate(merged)
    return with_precision(merged)


def with_precision(cfg: DictConfig) -> DictConfig:
    """`auto` precisions resolved for this machine (transferlab.precision): what runs, caches and
    records say is the precision that ran."""
    from transferlab import precision

    cfg.extract.precision = precision.extraction(cfg.extract.precision, cfg.trainer.accelerator)
    cfg.trainer.precision = precision.training(cfg.trainer.precision, cfg.trainer.accelerator)
    return cfg


def typed(schema: type, node: Any, source: str, where: str) -> DictConfig:
    """`node` merged onto a structured `schema`; a one-line ConfigError naming `where`."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), node)
    except Exception as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{source}: {where}.{key + ': ' if key else ''}{str(exc).splitlines()[0]}") from None


TRAINABLE = ("head", "all", "last_n", "lora")
# The numeric keys of metrics.json (transferlab.stages.evaluate), named here so checking needs no
# torch; a test keeps them equal. A sweep should optimise a val_ or train_ one: tuning on test
# leaks the test set into the choice.
METRICS = ("test_accuracy", "test_macro_f1", "train_accuracy", "val_accuracy", "trainable_params",
           "total_params", "train_seconds", "peak_memory_mb", "epochs", "backbone_load_seconds", "extraction_seconds",
           "cost_to_train_seconds", "inference_seconds_per_1k")


def validate(cfg: DictConfig) -> None:
    """Value checks the type system cannot express; raises a one-line ConfigError."""
    images, reads_images = cfg.data.source in IMAGE_SOURCES, cfg.backbone.name in IMAGE_BACKBONES
    checks = [
        (cfg.data.source in TEXT_SOURCES + IMAGE_SOURCES, "data.source", cfg.data.source,
         f"unknown; choose one of {', '.join(TEXT_SOURCES + IMAGE_SOURCES)}"),
        (cfg.backbone.name in TEXT_BACKBONES + IMAGE_BACKBONES, "backbone.name", cfg.backbone.name,
         f"unknown; choose one of {', '.join(TEXT_BACKBONES + IMAGE_BACKBONES)}"),
        (cfg.extract.precision in ("auto", "fp32", "bf16"), "extract.precision", cfg.extract.precision,
         "must be 'auto', 'fp32' or 'bf16'"),
        (cfg.extract.batch_size > 0, "extract.batch_size", cfg.extract.batch_size, "must be > 0"),
        (0 < cfg.data.val_fraction < 1, "data.val_fraction", cfg.data.val_fraction, "must be in (0, 1)"),
        (cfg.data.val_max_rows is None or cfg.data.val_max_rows > 0, "data.val_max_rows", cfg.data.val_max_rows,
         "must be > 0 or null"),
        (0 < cfg.data.test_fraction < 1, "data.test_fraction", cfg.data.test_fraction, "must be in (0, 1)"),
        (cfg.backbone.model is not None, "backbone.model", None, "required: a hub id or a local path"),
        (images == reads_images, "backbone", cfg.backbone.name,
         f"reads {'images' if reads_images else 'text'} but data '{cfg.data.name}' holds "
         f"{'images' if images else 'text'}; choose " + (f"an image backbone ({', '.join(IMAGE_BACKBONES)})"
                                                         if images else f"a text backbone ({', '.join(TEXT_BACKBONES)})")),
        (cfg.data.limit is None or cfg.data.limit > 0, "data.limit", cfg.data.limit, "must be > 0 or null"),
        (cfg.compare.task_runner in TASK_RUNNERS, "compare.task_runner", cfg.compare.task_runner,
         f"must be one of {', '.join(TASK_RUNNERS)}"),
        (cfg.compare.workers > 0, "compare.workers", cfg.compare.workers, "must be > 0"),
        (cfg.compare.tie_margin >= 0, "compare.tie_margin", cfg.compare.tie_margin,
         "must be >= 0 (the least lead in test accuracy that counts as a win)"),
        (cfg.backbone.image_size is None or cfg.backbone.image_size >= 32, "backbone.image_size",
         cfg.backbone.image_size, "must be >= 32 or null"),
        (cfg.backbone.pooling == "mean", "backbone.pooling", cfg.backbone.pooling,
         "only 'mean' is supported (every backbone pools by averaging)"),
        (cfg.backbone.max_length is None or cfg.backbone.max_length > 0, "backbone.max_length",
         cfg.backbone.max_length, "must be > 0 or null"),
        (cfg.optimized_metric in METRICS, "optimized_metric", cfg.optimized_metric,
         f"not a metric; choose one of {', '.join(METRICS)}"),
    ]
    checks.append((valid_budget(cfg.compare.budget), "compare.budget", cfg.compare.budget,
                   "a duration such as 90s, 15m or 1h30m, or null for the whole grid"))
    checks.append((cfg.compare.workers == 1 or cfg.trainer.devices == 1, "compare.workers", cfg.compare.workers,
                   f"runs at once, each on trainer.devices={cfg.trainer.devices}, would share the same "
                   "processors; set one of them to 1"))
    checks += strategy_checks(cfg.strategy, "strategy") + compare_override_checks(list(cfg.compare.overrides))
    checks += train_size_checks(list(cfg.compare.train_sizes), "compare.train_sizes")
    checks += seed_checks(cfg.seed, list(cfg.compare.seeds)) + grid_checks(cfg.compare)
    for ok, key, value, why in checks + trainer_checks(cfg.trainer) + logger_checks(cfg.logger):
        if not ok:
            raise ConfigError(f"{key}={value!r}: {why}")


def valid_budget(budget: Any) -> bool:
    from transferlab.planner import budget_seconds

    try:
        return budget is None or budget_seconds(budget) > 0
    except ConfigError:
        return False


TRAIN_SIZE = "data.train_size"  # the key data.splits.resolve_train_size's messages name


def train_size_checks(sizes: list, key: str) -> list[tuple]:
    """Each train size of a grid in its form (a count, a fraction in (0, 1] or 'all'), so a bad one
    stops the grid before its first cell trains rather than when the grid reaches it. The rule is
    data.splits.resolve_train_size's, applied as if any count were available (pandas is imported for
    it): whether the data holds that many is known once it is prepared (pipeline.prepared_grid)."""
    from transferlab.data.splits import resolve_train_size

    def problem(size: Any) -> str | None:
        try:
            resolve_train_size(size, sys.maxsize, 0)
        except DataError as exc:
            return str(exc).removeprefix(f"{TRAIN_SIZE}={size!r}: ")
        return None

    return [(why is None, f"{key}[{i}]", size, why) for i, (size, why) in enumerate(zip(sizes, map(problem, sizes)))]


MAX_SEED = 2**32 - 1  # numpy's generators and Lightning's seed_everything take seeds in [0, 2**32)


def seed_checks(seed: int, seeds: list[int]) -> list[tuple]:
    """Seeds numpy and Lightning take, checked before any work: out of range, they raise a bare
    ValueError deep inside a run, after its run folder was begun."""
    why = f"a seed must be in [0, {MAX_SEED}]"
    return [(0 <= seed <= MAX_SEED, "seed", seed, why),
            *((0 <= s <= MAX_SEED, f"compare.seeds[{i}]", s, why) for i, s in enumerate(seeds))]


def grid_checks(compare: DictConfig) -> list[tuple]:
    """No repeats in a grid's axes: a repeated seed, size or strategy would be the same cell (one run
    folder) counted twice in the report, as if it were evidence from another run."""
    def repeat(values: list) -> Any:
        return next((v for i, v in enumerate(values) if v in values[:i]), None)

    return [(repeat(values) is None, f"compare.{key}", values, f"{repeat(values)!r} is listed twice")
            for key in ("strategies", "train_sizes", "seeds")
            for values in [list(compare[key])]]


def at_key(exc: TransferlabError, key: str) -> TransferlabError:
    """A train size's error (resolve_train_size names data.train_size) naming the key the user set
    instead: a grid's cells take their data.train_size from compare.train_sizes[i]."""
    message = str(exc)
    return type(exc)(key + message.removeprefix(TRAIN_SIZE)) if message.startswith(TRAIN_SIZE + "=") else exc


def strategy_checks(s: DictConfig, at: str) -> list[tuple]:
    """A strategy's values; LP-FT's probe is checked as a strategy too, and must be a head."""
    checks = [
        (s.kind in ("head", "finetune"), f"{at}.kind", s.kind, "must be 'head' or 'finetune'"),
        (s.trainable in TRAINABLE, f"{at}.trainable", s.trainable, f"must be one of {TRAINABLE}"),
        (s.kind == "finetune" or s.trainable == "head", f"{at}.trainable", s.trainable,
         "a kind=head strategy trains only the head"),
        (s.last_n > 0, f"{at}.last_n", s.last_n, "must be > 0"),
        (s.layer_decay is None or 0 < s.layer_decay <= 1, f"{at}.layer_decay", s.layer_decay,
         "must be in (0, 1]"),
        (s.unfreeze_every is None or s.unfreeze_every > 0, f"{at}.unfreeze_every", s.unfreeze_every,
         "must be > 0"),
        (s.head.type in ("linear", "mlp"), f"{at}.head.type", s.head.type, "must be 'linear' or 'mlp'"),
        (0 <= s.head.dropout < 1, f"{at}.head.dropout", s.head.dropout, "must be in [0, 1)"),
        (s.optimizer in ("adamw", "lbfgs"), f"{at}.optimizer", s.optimizer, "must be 'adamw' or 'lbfgs'"),
        (s.kind == "head" or s.optimizer == "adamw", f"{at}.optimizer", s.optimizer,
         "lbfgs (full batch) is for heads on cached features; fine-tuning takes adamw"),
        (s.optimizer != "lbfgs" or s.gradient_clip_val is None, f"{at}.gradient_clip_val", s.gradient_clip_val,
         "L-BFGS steps come from a line search and are not clipped; set it to null"),
        (s.lora.r > 0, f"{at}.lora.r", s.lora.r, "must be > 0"),
        (s.lr > 0, f"{at}.lr", s.lr, "must be > 0"),
        (s.head_lr is None or s.head_lr > 0, f"{at}.head_lr", s.head_lr, "must be > 0"),
        (s.max_epochs > 0, f"{at}.max_epochs", s.max_epochs, "must be > 0"),
        (s.min_steps >= 0, f"{at}.min_steps", s.min_steps, "must be >= 0"),
        (s.val_every_n_steps > 0, f"{at}.val_every_n_steps", s.val_every_n_steps, "must be > 0"),
        (s.optimizer != "lbfgs" or c_values_ok(s.C), f"{at}.C", s.C,
         "must be a number > 0 or a non-empty list of them (chosen on validation)"),
        (s.tol > 0, f"{at}.tol", s.tol, "must be > 0"),
        (s.batch_size > 0, f"{at}.batch_size", s.batch_size, "must be > 0"),
        (0 <= s.warmup_ratio < 1, f"{at}.warmup_ratio", s.warmup_ratio, "must be in [0, 1)"),
    ]
    if s.probe is not None:
        checks += [(s.kind == "finetune", f"{at}.probe", s.probe.name, "only a fine-tuning strategy starts from a probe"),
                   (s.probe.kind == "head", f"{at}.probe.kind", s.probe.kind, "the probe must be a head strategy"),
                   (s.probe.probe is None, f"{at}.probe.probe", s.probe.probe, "a probe has no probe of its own")]
        checks += strategy_checks(s.probe, f"{at}.probe")
    return checks


def c_values(c: Any) -> list[float]:
    """strategy.C as the list of candidates it names (one number: one candidate)."""
    from omegaconf import ListConfig

    return [float(v) for v in c] if isinstance(c, (list, tuple, ListConfig)) else [float(c)]


def c_values_ok(c: Any) -> bool:
    try:
        values = c_values(c)
    except (TypeError, ValueError):
        return False
    return bool(values) and all(v > 0 for v in values)


def compare_override_checks(overrides: list[str]) -> list[tuple]:
    """compare.overrides set strategy keys (the strategy itself is each of compare.strategies)."""
    keys = [o.key_or_group for o in parsed(overrides)]
    wrong = [k for k in keys if not k.startswith("strategy.")]
    return [(not wrong, "compare.overrides", overrides,
             f"{wrong[0] if wrong else ''}: only strategy.* keys (each cell's strategy is one of compare.strategies)")]


def trainer_checks(t: DictConfig) -> list[tuple]:
    """Devices and strategy: several processes only through ddp_spawn (see SPAWN_STRATEGY)."""
    devices_ok = t.devices == "auto" or (isinstance(t.devices, int) and (t.devices > 0 or t.devices == -1))
    return [
        (devices_ok, "trainer.devices", t.devices, "must be a count > 0, -1 (all) or 'auto'"),
        (not t.strategy.startswith("ddp") or t.strategy.startswith(SPAWN_STRATEGY), "trainer.strategy",
         t.strategy, f"re-runs the whole command in every process; use {SPAWN_STRATEGY} (trainer=ddp)"),
        (t.devices == 1 or t.strategy.startswith(SPAWN_STRATEGY), "trainer.devices", t.devices,
         f"more than one device needs trainer.strategy={SPAWN_STRATEGY} (trainer=ddp on CPU)"),
    ]


def logger_checks(logger: DictConfig) -> list[tuple]:
    """A known Lightning logger, only keys its class takes, and its package installed."""
    import importlib.util

    target = logger.get("_target_")
    if not logger:
        return []
    if target not in LOGGERS:
        return [(False, "logger._target_", target, f"choose one of {', '.join(LOGGERS)}")]
    package, keys = LOGGERS[target]
    unknown = sorted(set(logger) - {"_target_", *keys})
    return [
        (not unknown, f"logger.{unknown[0] if unknown else ''}", logger.get(unknown[0]) if unknown else None,
         f"unknown key for {target.rpartition('.')[2]}; choose from {', '.join(keys)}"),
        (package is None or importlib.util.find_spec(package) is not None, "logger._target_", target,
         f"needs the {package} package: pip install 'transferlab[loggers]'"),
    ]


def load_params(path: str | Path = "params.yaml") -> DictConfig:
    """The composed config as DVC stages see it: params.yaml checked against the schema."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    return checked(OmegaConf.load(path), str(path))


def write_params(path: str | Path = "params.yaml", conf_dir: Path = CONF_DIR,
                 overrides: list[str] | None = None) -> None:
    """Regenerate params.yaml from conf/'s defaults, with `overrides` as `dvc exp run -S` gives them."""
    from transferlab.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(PARAMS_HEADER + OmegaConf.to_yaml(compose(overrides, conf_dir=conf_dir)))


PARAMS_HEADER = ("# Generated from conf/ (python -m transferlab.config); `dvc exp run` regenerates it.\n"
                 "# Edit conf/, not this file: tests/test_params.py checks the two agree.\n")


if __name__ == "__main__":
    write_params()
