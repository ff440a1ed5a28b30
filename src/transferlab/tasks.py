"""Prefect tasks: the stages with retries (I/O-bound ones) and input-keyed caching.

Every task is cached on its inputs and its source, so a rerun with nothing changed (a scheduled
compare) retrains nothing: the data and feature directories are content-addressed, so a changed
data file gives new inputs and reruns everything downstream. Submit them through `trusted_while`
(train/evaluate through `for_run`), so outputs that were deleted are rebuilt, not trusted.

Import after `transferlab.orchestration.configure_prefect` has set Prefect's environment.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from prefect import Task, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from transferlab.orchestration import retry_unless_bad_input, run_dir_stamps
from transferlab.stages import evaluate, extract, prepare, train

IO_RETRIES = dict(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_bad_input)


@task(cache_policy=INPUTS + TASK_SOURCE, **IO_RETRIES)
def prepare_task(data: dict, seed: int, out_dir: str) -> str:
    return str(prepare.run(OmegaConf.create(data), seed, out_dir))


@task(cache_policy=INPUTS + TASK_SOURCE, **IO_RETRIES)
def extract_task(backbone: dict, extract_cfg: dict, data_dir: str, cache_root: str) -> str:
    return str(extract.run(OmegaConf.create(backbone), OmegaConf.create(extract_cfg), data_dir, cache_root))


@task(cache_policy=INPUTS + TASK_SOURCE, retries=1, retry_condition_fn=retry_unless_bad_input)
def train_task(cfg: dict, data_dir: str, features_dir: str | None, run_dir: str) -> str:
    return str(train.run(OmegaConf.create(cfg), data_dir, features_dir, run_dir))


@task(cache_policy=INPUTS + TASK_SOURCE + run_dir_stamps("model.json"))
def evaluate_task(cfg: dict, data_dir: str, features_dir: str | None, run_dir: str) -> dict:
    return evaluate.run(OmegaConf.create(cfg), data_dir, features_dir, run_dir, run_dir)


RUN_OUTPUTS = {train_task.name: ("model.json", "model.safetensors"), evaluate_task.name: ("metrics.json",)}


def trusted_while(task_: Task, *paths: str | Path) -> Task:
    """`task_` whose cached result is trusted only while the files or folders it wrote exist; if one
    is gone it runs again and overwrites its cache record (refresh_cache). Existence cannot be part
    of the cache key: running the task changes it, so the key of a second run would never match."""
    if all(Path(p).exists() for p in paths):
        return task_
    fresh = task_.with_options(refresh_cache=True)
    # with_options re-reads the source, which a served flow run (code cloudpickled into a subprocess)
    # cannot: keep the original's, or the TASK_SOURCE part of the key differs and the next run misses
    fresh.source_code = task_.source_code
    return fresh


def for_run(task_: Task, run_dir: str) -> Task:
    """train_task/evaluate_task as submitted for one run folder, trusted while its outputs are there."""
    return trusted_while(task_, *(Path(run_dir) / name for name in RUN_OUTPUTS[task_.name]))
