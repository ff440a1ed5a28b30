"""Prefect settings shared by the flows: offline-safe, quiet, caches that notice deleted artifacts."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
    for name in ("httpx", "httpcore"):
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


def paths_exist(*names: str):
    """A cache-key part that changes when an artifact path named by a task input is deleted."""
    from prefect.cache_policies import CacheKeyFnPolicy

    def key(_ctx, inputs: dict) -> str:
        return "|".join(f"{n}:{Path(inputs[n]).exists()}" for n in names)

    return CacheKeyFnPolicy(cache_key_fn=key)


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
