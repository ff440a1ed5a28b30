"""The Prefect flows: the pipeline's steps as tasks, one run (`adapt`) and a comparison (`compare`).

The flows add orchestration only: each step is a task cached on its inputs and on the version of
its stage's code (`transferlab.provenance`), a crashed step is retried after saying why, and a
comparison's cells fan out through a task runner. A cached result is trusted only while what it
wrote is intact (features verified against their sha256): otherwise the task runs again with
`refresh_cache`. Import after `transferlab.entry.configure_prefect` has set Prefect's environment.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from prefect import Task, flow, task
from prefect.cache_policies import INPUTS, NO_CACHE, CacheKeyFnPolicy
from prefect.utilities.hashing import hash_objects

from transferlab import interrupt, pipeline
from transferlab.errors import EXPECTED, ConfigError
from transferlab.provenance import code_version

log = logging.getLogger("transferlab")
BAD_INPUT_RUNS: set[str] = set()  # ids of task and flow runs that failed on bad input


def note_bad_input(_task_or_flow, run, state) -> None:
    """An on_failure hook: remember runs that failed on bad input, whose Prefect log lines
    BadInputFilter drops (the entry point reports the error once, as one line); an interrupted fit's
    too (the entry point says that in one line)."""
    try:
        state.result()
    except EXPECTED:
        BAD_INPUT_RUNS.add(str(run.id))
    except Exception:
        pass


class BadInputFilter(logging.Filter):
    """Drops Prefect's log lines about a run that failed on bad input, tracebacks of bad input, and
    every line once the user has interrupted the process (the runs ending then: the flow's "Crash
    detected", a downstream task's "NotReady"): the entry point says each of these in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if interrupt.REQUESTED.is_set():
            return False
        if record.exc_info and isinstance(record.exc_info[1], EXPECTED):
            return False
        run_id = getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None)
        return str(run_id) not in BAD_INPUT_RUNS


def quiet_logs() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.engine", "prefect.events.clients",
                 "prefect._internal.concurrency"):  # the last two: its event client, when the server is gone
        logging.getLogger(name).addFilter(BadInputFilter())
    for name in ("httpx", "httpcore", "alembic"):  # alembic: optuna's set-up lines
        logging.getLogger(name).setLevel(logging.WARNING)
    # the Dask runner's cluster: banners at INFO, and at WARNING its nannies killing workers that are
    # slow to exit when the cluster closes after the grid
    logging.getLogger("distributed").setLevel(logging.ERROR)


quiet_logs()


def stage_code(module: str) -> CacheKeyFnPolicy:
    """A cache-key part: the version of a stage's code and the libraries that shape its output."""
    return CacheKeyFnPolicy(cache_key_fn=lambda _ctx, _inputs: code_version(module))


def run_dir_stamp(name: str) -> CacheKeyFnPolicy:
    """A cache-key part: size + mtime of a file an upstream task wrote into the task's `run_dir`,
    so a retrained model is re-evaluated."""
    def stamp(_ctx, inputs: dict) -> str:
        path = Path(inputs["run_dir"]) / name
        return f"{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.is_file() else "missing"

    return CacheKeyFnPolicy(cache_key_fn=stamp)


def cell_settings() -> CacheKeyFnPolicy:
    """A cache-key part: the cell's config without its `compare` section, which says how the cells
    are chosen and judged (budget, tie margin), never how one trains. A budgeted rerun on another
    budget, or a report with another tie margin, then finds the cells it finished before."""
    def settings(_ctx, inputs: dict) -> str | None:
        return hash_objects({key: value for key, value in inputs["cfg"].items() if key != "compare"})

    return CacheKeyFnPolicy(cache_key_fn=settings)


def retry_unless_bad_input(task_: Task, task_run, state) -> bool:
    """Retries are for crashes; bad input fails the same way every time. A retried failure is
    said at WARNING, with its reason (Prefect says it at INFO, which the quiet settings hide)."""
    try:
        state.result()
    except EXPECTED:
        return False
    except Exception as exc:
        log.warning("%s failed: %r; retrying", task_run.name, exc)
        return True
    return True


RETRIED = dict(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_bad_input,
               on_failure=[note_bad_input])
prepare_task = task(pipeline.prepare_step, name="prepare", **RETRIED,
                    cache_policy=INPUTS + stage_code("transferlab.stages.prepare"))
extract_task = task(pipeline.extract_step, name="extract", **RETRIED,  # a progress bar or none: the same features
                    cache_policy=(INPUTS - "progress") + stage_code("transferlab.stages.extract"))
train_task = task(pipeline.train_step, name="train", retries=1, retry_delay_seconds=1,
                  retry_condition_fn=retry_unless_bad_input, on_failure=[note_bad_input],
                  cache_policy=(INPUTS - "cfg") + cell_settings() + stage_code("transferlab.stages.train"))
probe_task = task(pipeline.probe_step, name="probe cost", cache_policy=NO_CACHE)  # a timing of this machine, now
evaluate_task = task(pipeline.evaluate_step, name="evaluate", on_failure=[note_bad_input],
                     cache_policy=INPUTS + stage_code("transferlab.stages.evaluate") + run_dir_stamp("model.json"))


def trusted(task_: Task, intact: bool) -> Task:
    """`task_`, whose cached result is trusted only while `intact` (what it wrote is still there and
    sound); else it runs again and overwrites its cache record. Intactness cannot be part of the
    key: running the task changes it, so the next run's key would never match."""
    return task_ if intact else task_.with_options(refresh_cache=True)


class TaskSteps(pipeline.Steps):
    """The pipeline's steps as Prefect tasks: prepare and extract run in the flow, once per distinct
    input; train and evaluate are submitted to the flow's task runner."""

    def __init__(self) -> None:
        self.done: dict[str, Any] = {}
        self.trained: list[Any] = []  # every train future submitted, for its error (see `adapt`)

    def once(self, key: list, call) -> Any:
        text = json.dumps(key, sort_keys=True, default=str)
        if text not in self.done:
            self.done[text] = call()
        return self.done[text]

    def prepare(self, data: dict, seed: int, cache_root: str) -> str:
        intact = pipeline.prepared_intact(data, seed, cache_root)
        return self.once(["prepare", data, seed, cache_root],
                         lambda: trusted(prepare_task, intact)(data, seed, cache_root))

    def extract(self, backbone: dict, extract_cfg: dict, data_dir: str, cache_root: str, progress: bool = True) -> str:
        intact = pipeline.features_intact(backbone, extract_cfg, data_dir, cache_root)
        return self.once(["extract", backbone, extract_cfg, data_dir, cache_root],
                         lambda: trusted(extract_task, intact)(backbone, extract_cfg, data_dir, cache_root, progress))

    def train(self, cfg: dict, data_dir: str, features_dir: str | None, run_dir: str) -> Any:
        future = trusted(train_task, pipeline.run_intact(run_dir, "train")).submit(cfg, data_dir, features_dir, run_dir)
        self.trained.append(future)
        return future

    def evaluate(self, data_dir: str, features_dir: str | None, run_dir: str, after: Any = None) -> Any:
        return trusted(evaluate_task, pipeline.run_intact(run_dir, "evaluate")).submit(
            data_dir, features_dir, run_dir, wait_for=[after])

    def probe(self, cfg: dict, data_dir: str) -> dict:
        return probe_task(cfg, data_dir)

    def result(self, outcome: Any) -> dict | None:
        outcome.wait()
        return outcome.result() if outcome.state.is_completed() else None


@flow(name="adapt", log_prints=True, on_failure=[note_bad_input])
def adapt(cfg: dict, run_dir: str) -> dict:
    """One cell: prepare -> extract (when the strategy uses features) -> train -> evaluate.

    A train task that fails leaves evaluate, which waits for it, never run: PENDING, whose result()
    is Prefect's UnfinishedRun traceback. The failed train's own error (bad input: one line) is
    raised instead."""
    steps = TaskSteps()
    outcome = pipeline.run_cell(OmegaConf.create(cfg), run_dir, steps)
    outcome.wait()
    if not outcome.state.is_completed():
        for trained in steps.trained:
            trained.result()
    return outcome.result()


@flow(name="compare", log_prints=True, on_failure=[note_bad_input])
def compare(cfg: dict, out_dir: str) -> dict:
    """Every strategy x train size x seed of cfg.compare on identical splits, then the report."""
    return pipeline.run_grid(OmegaConf.create(cfg), out_dir, TaskSteps())


def task_runner(compare_cfg: Any):
    """compare.task_runner -> Prefect's thread pool in this process, or a local Dask cluster of
    `workers` processes (the GIL-free way to train several runs at once). Each Dask worker gets an
    equal share of the cores as torch threads, so the workers together never oversubscribe the CPU;
    workers are spawned processes and inherit this environment (PREFECT_API_URL, PREFECT_HOME)."""
    if compare_cfg.task_runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=compare_cfg.workers)
    if compare_cfg.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        quiet_logs()  # importing distributed has set its loggers back to INFO
        torch_threads = str(max(1, (os.cpu_count() or 1) // compare_cfg.workers))
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": compare_cfg.workers, "threads_per_worker": 1, "processes": True,
            "dashboard_address": None, "silence_logs": logging.ERROR, "env": {"OMP_NUM_THREADS": torch_threads}})
    raise ConfigError(f"compare.task_runner={compare_cfg.task_runner!r}: must be 'threads' or 'dask'")
