"""Prefect tasks: the stages with retries (I/O-bound ones) and input-keyed caching (prepare, extract).

Import after `transferlab.orchestration.configure_prefect` has set Prefect's environment.
"""

from __future__ import annotations

from omegaconf import OmegaConf
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from transferlab.orchestration import paths_exist, retry_unless_bad_input
from transferlab.stages import evaluate, extract, prepare, train

IO_RETRIES = dict(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_bad_input)


@task(cache_policy=INPUTS + TASK_SOURCE + paths_exist("out_dir"), **IO_RETRIES)
def prepare_task(data: dict, seed: int, out_dir: str) -> str:
    return str(prepare.run(OmegaConf.create(data), seed, out_dir))


@task(cache_policy=INPUTS + TASK_SOURCE + paths_exist("data_dir", "cache_root"), **IO_RETRIES)
def extract_task(backbone: dict, extract_cfg: dict, data_dir: str, cache_root: str) -> str:
    return str(extract.run(OmegaConf.create(backbone), OmegaConf.create(extract_cfg), data_dir, cache_root))


@task(retries=1, retry_condition_fn=retry_unless_bad_input)
def train_task(cfg: dict, data_dir: str, features_dir: str | None, run_dir: str) -> str:
    return str(train.run(OmegaConf.create(cfg), data_dir, features_dir, run_dir))


@task
def evaluate_task(cfg: dict, data_dir: str, features_dir: str | None, run_dir: str) -> dict:
    return evaluate.run(OmegaConf.create(cfg), data_dir, features_dir, run_dir, run_dir)
