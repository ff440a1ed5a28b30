"""Prefect settings shared by the flows: offline-safe, quiet, caches that notice deleted artifacts."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

QUIET_PREFECT_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
}


def configure_prefect(project_root: Path) -> None:
    """Call before importing prefect; a user's own settings win."""
    os.environ.setdefault("PREFECT_HOME", str(project_root / ".prefect"))
    for key, value in QUIET_PREFECT_ENV.items():
        os.environ.setdefault(key, value)


class _BadInputFilter(logging.Filter):
    """Bad input is reported once, as one line, by the entry point; drop Prefect's tracebacks of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from transferlab.errors import TransferlabError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TransferlabError):
            return False
        message = record.getMessage()
        return not any(f"exception {cls.__name__}:" in message for cls in _bad_input_types())


def _bad_input_types() -> list[type]:
    from transferlab.errors import TransferlabError

    return [TransferlabError, *TransferlabError.__subclasses__()]


def quiet_logs() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.engine"):
        logging.getLogger(name).addFilter(_BadInputFilter())
    for name in ("httpx", "httpcore", "distributed"):  # distributed: the Dask runner's cluster
        logging.getLogger(name).setLevel(logging.WARNING)


def retry_unless_bad_input(task, task_run, state) -> bool:
    """Retries are for flaky I/O; bad input fails the same way every time."""
    from transferlab.errors import TransferlabError

    try:
        state.result()
    except TransferlabError:
        return False
    except Exception:
        return True
    return True


def run_dir_stamps(*names: str):
    """A cache-key part: size + mtime of files an upstream task wrote into the task's `run_dir`, so a
    retrained model is re-evaluated. (Whether a task's own outputs still exist cannot be part of its
    key: it changes by running; `transferlab.tasks.for_run` checks that at submission instead.)"""
    from prefect.cache_policies import CacheKeyFnPolicy

    def stamp(path: Path) -> str:
        return f"{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.is_file() else "missing"

    return CacheKeyFnPolicy(cache_key_fn=lambda _ctx, inputs: "|".join(
        f"{n}:{stamp(Path(inputs['run_dir']) / n)}" for n in names))


def task_runner(compare: Any):
    """compare.task_runner -> Prefect's thread pool in this process, or a local Dask cluster of
    `workers` processes (the GIL-free way to train several runs at once). Each Dask worker gets an
    equal share of the cores as torch threads, so the workers together never oversubscribe the CPU;
    workers are spawned processes and inherit this environment (PREFECT_API_URL, PREFECT_HOME)."""
    from transferlab.errors import ConfigError

    if compare.task_runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=compare.workers)
    if compare.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        torch_threads = str(max(1, (os.cpu_count() or 1) // compare.workers))
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": compare.workers, "threads_per_worker": 1, "processes": True,
            "dashboard_address": None, "env": {"OMP_NUM_THREADS": torch_threads}})
    raise ConfigError(f"compare.task_runner={compare.task_runner!r}: must be 'threads' or 'dask'")


def cron_schedule(schedule: Any):
    """schedule.cron/timezone as Prefect's CronSchedule; a bad string fails in one line naming the key."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    from transferlab.errors import ConfigError

    try:
        return CronSchedule(cron=schedule.cron, timezone=schedule.timezone)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = "timezone" if "timezone" in error["loc"] else "cron"
        raise ConfigError(f"schedule.{key}={schedule[key]!r}: "
                          f"{error['msg'].removeprefix('Value error, ')}") from None


def discard_run_dir(run_dir: Path) -> None:
    """A run stopped by bad input leaves nothing behind: Hydra's own files go, the folder too if empty."""
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for log in run_dir.glob("*.log"):
        log.unlink()
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


@contextmanager
def exit_on_bad_input(run_dir: Path | None = None) -> Iterator[None]:
    """Bad input ends the command with one line on stderr, exit code 2, and no partial run folder."""
    from transferlab.errors import TransferlabError

    try:
        yield
    except TransferlabError as exc:
        if run_dir is not None:
            discard_run_dir(run_dir)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def check_group_options() -> None:
    """`strategy=nope` or `strategy.lrr=1` on the command line: one line naming the options or the
    nearest key, before Hydra's multi-line report."""
    from transferlab.config import check_overrides

    with exit_on_bad_input():
        check_overrides(sys.argv[1:])
