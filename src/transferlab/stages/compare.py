"""Stage `compare`: one strategy x train size x seed of the comparison, as dvc.yaml's matrix runs it.

Prepared splits and features come from the content-addressed cache (paths.cache_dir) that
flows/compare.py uses too: every strategy at a size and seed trains on the same rows, and the
backbone embeds each input once across all matrix stages.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.config import checked, compose
from transferlab.stages import artifact_dirs, evaluate, extract, prepare, train
from transferlab.strategies import needs_features


def run_name(strategy: str, size: int | float | str, seed: int) -> str:
    return f"{strategy}-n{size}-s{seed}"


def sized(data: dict, size: int | float | str) -> dict:
    """The data section at one train size (`all` keeps every training row)."""
    return {**data, "train_size": None if size == "all" else size}


def run_config(cfg: DictConfig, strategy: str, size: int | float | str, seed: int, conf_dir: Path) -> DictConfig:
    """params.yaml at this size and seed, with the strategy section composed from conf/strategy/<name>.yaml."""
    base = OmegaConf.to_container(cfg, resolve=True)
    chosen = OmegaConf.to_container(compose([f"strategy={strategy}"], conf_dir).strategy, resolve=True)
    return checked({**base, "strategy": chosen, "seed": seed, "data": sized(base["data"], size)},
                   f"strategy={strategy}")


def inputs(cfg: DictConfig) -> tuple[Path, Path | None]:
    """Prepared splits, and features if the strategy trains a head only; both cached."""
    cache_root = Path(cfg.paths.cache_dir)
    data_dir = prepare.cached(cfg.data, cfg.seed, cache_root)
    if not needs_features(cfg.strategy):
        return data_dir, None
    return data_dir, extract.run(cfg.backbone, cfg.extract, data_dir, cache_root / "features")


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    data_dir, features_dir = inputs(cfg)
    train.run(cfg, data_dir, features_dir, run_dir)
    return evaluate.run(cfg, data_dir, features_dir, run_dir, run_dir)


def dvc_main(cfg: DictConfig, strategy: str, size: str, seed: int, conf_dir: Path = Path("conf")) -> None:
    size = size if size == "all" else (float(size) if "." in size else int(size))
    run(run_config(cfg, strategy, size, seed, conf_dir), artifact_dirs(cfg)["compare"] / run_name(strategy, size, seed))
