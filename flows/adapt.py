"""Adapt one pre-trained backbone to one data set with one strategy, as a Prefect flow.

    python flows/adapt.py data=bbc_news strategy=linear_probe data.train_size=200
    python flows/adapt.py -m strategy=linear_probe,finetune_full
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from transferlab.orchestration import configure_prefect, paths_exist, quiet_logs, retry_unless_bad_input

configure_prefect(Path(__file__).resolve().parents[1])

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import INPUTS, TASK_SOURCE  # noqa: E402

from transferlab.config import check_group_choices, checked  # noqa: E402
from transferlab.errors import TransferlabError  # noqa: E402
from transferlab.stages import evaluate, extract, prepare, train  # noqa: E402

IO_RETRIES = dict(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_bad_input)


@task(cache_policy=INPUTS + TASK_SOURCE + paths_exist("out_dir"), **IO_RETRIES)
def prepare_task(data: dict, seed: int, out_dir: str) -> str:
    return str(prepare.run(OmegaConf.create(data), seed, out_dir))


@task(cache_policy=INPUTS + TASK_SOURCE + paths_exist("data_dir", "cache_root"), **IO_RETRIES)
def extract_task(backbone: dict, extract_cfg: dict, data_dir: str, cache_root: str) -> str:
    return str(extract.run(OmegaConf.create(backbone), OmegaConf.create(extract_cfg), data_dir, cache_root))


@task
def train_task(cfg: dict, data_dir: str, features_dir: str | None, run_dir: str) -> str:
    return str(train.run(OmegaConf.create(cfg), data_dir, features_dir, run_dir))


@task
def evaluate_task(cfg: dict, data_dir: str, features_dir: str | None, run_dir: str) -> dict:
    return evaluate.run(OmegaConf.create(cfg), data_dir, features_dir, run_dir, run_dir)


@flow(name="adapt", log_prints=True)
def adapt(cfg: dict, run_dir: str) -> dict:
    """prepare -> extract (head strategies) -> train -> evaluate; metrics.json lands in run_dir."""
    c = OmegaConf.create(cfg)
    cache_root = Path(c.paths.cache_dir)
    data_dir = prepare_task(cfg["data"], c.seed, str(prepare.cache_dir(c.data, c.seed, cache_root)))
    features_dir = None
    if c.strategy.kind == "head":
        features_dir = extract_task(cfg["backbone"], cfg["extract"], data_dir, str(cache_root / "features"))
    train_task(cfg, data_dir, features_dir, run_dir)
    return evaluate_task(cfg, data_dir, features_dir, run_dir)


def discard_run_dir(run_dir: Path) -> None:
    """A run stopped by bad input leaves nothing behind: Hydra's own files go, the folder too if empty."""
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for log in run_dir.glob("*.log"):
        log.unlink()
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_logs()
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        cfg = checked(cfg, "config")
        metrics = adapt(OmegaConf.to_container(cfg, resolve=True), run_dir)
    except TransferlabError as exc:
        discard_run_dir(Path(run_dir))
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({k: metrics[k] for k in ("strategy", "train_size", "test_accuracy",
                                              "trainable_params", "train_seconds")}))
    print(f"results: {Path(run_dir) / 'metrics.json'}")


if __name__ == "__main__":
    try:
        check_group_choices(sys.argv[1:])
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    main()
