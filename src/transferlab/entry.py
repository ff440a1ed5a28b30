"""The one bootstrap of every flow script (flows/*.py): Prefect's environment, a check of the
command line's overrides before anything heavy loads, and the body of each script's Hydra main.

Each script is `@hydra.main` over one function here and `start(main, __file__)`: Prefect and torch
are imported only inside these functions, after `start` has set Prefect's settings."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from omegaconf import DictConfig, OmegaConf

from transferlab import interrupt
from transferlab.errors import ConfigError, TransferlabError

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


def start(main: Callable[[], object], script: str) -> None:
    """Run a flow script's Hydra main: Prefect configured for the script's project, and a misspelt
    option or key on the command line stopped in one line before torch and Prefect load."""
    from transferlab.config import check_overrides

    configure_prefect(Path(script).resolve().parents[1])
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the Optuna sweeper's set-up lines
    # and optuna's own "A new study created in memory" (in ANSI colour into a pipe), which Hydra's
    # "Study name" line repeats; optuna sets only its root logger's level, so this one holds
    logging.getLogger("optuna.storages._in_memory").setLevel(logging.WARNING)
    with exit_on_bad_input():
        check_overrides([a for a in sys.argv[1:] if not a.startswith("-") and "=" in a])
    interrupt.install()
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the same command with the same hydra.run.dir resumes a fine-tune from its "
              "last checkpoint", file=sys.stderr)
        sys.exit(130)


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
    try:
        yield
    except TransferlabError as exc:
        if run_dir is not None:
            discard_run_dir(run_dir)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


@contextmanager
def interrupted_as_such() -> Iterator[None]:
    """After Ctrl-C, whatever fails on the way out is the interrupt, said by `start` in one line: a
    terminal's Ctrl-C reaches the whole process group, Prefect's ephemeral server included, and the
    flow's crash handler then failed to reach it in a long traceback."""
    try:
        yield
    except Exception:
        if interrupt.REQUESTED.is_set():
            raise KeyboardInterrupt from None
        raise


def hydra_run() -> tuple[Path, list[str]]:
    """This Hydra job's output folder and its command-line overrides."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    return Path(hydra.runtime.output_dir), list(hydra.overrides.task)


def runnable(cfg: DictConfig) -> DictConfig:
    """The checked config, its data where data.path says (the check `prepare` makes first): a missing
    file stops in seconds, before the flows import Prefect and torch and its server starts."""
    from transferlab.config import checked
    from transferlab.data.sources import check_found

    cfg = checked(cfg, "config")
    check_found(cfg.data)
    return cfg


def adapt(cfg: DictConfig) -> float:
    """flows/adapt.py: one flow run; returns metrics[optimized_metric], the objective a sweeper reads."""
    run_dir, _ = hydra_run()
    with interrupted_as_such(), exit_on_bad_input(run_dir):
        cfg = runnable(cfg)
        from transferlab import flows

        metrics = flows.adapt(OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    print(json.dumps({k: metrics[k] for k in ("strategy", "train_size", "test_accuracy",
                                              "trainable_params", "train_seconds")}))
    print(f"results: {run_dir / 'metrics.json'}")
    return float(metrics[cfg.optimized_metric])


def comparison(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The checked config of a comparison, its data found (`runnable`). `strategy...` on its command
    line is refused: each cell's strategy is one of compare.strategies, tuned for all through
    compare.overrides."""
    from transferlab.config import parsed

    direct = [o for o, p in zip(overrides, parsed(overrides)) if p.key_or_group.split(".")[0] == "strategy"]
    if direct:
        raise ConfigError(f"{direct[0]}: a comparison runs each of compare.strategies; set strategy keys "
                          f"for every cell with \"compare.overrides=['{direct[0]}']\"")
    return runnable(cfg)


def compare(cfg: DictConfig) -> None:
    """flows/compare.py: the comparison as one flow run, then the report."""
    run_dir, overrides = hydra_run()
    with interrupted_as_such(), exit_on_bad_input(run_dir):
        cfg = comparison(cfg, overrides)
        from transferlab import flows

        result = flows.compare.with_options(task_runner=flows.task_runner(cfg.compare))(
            OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    print(result["recommendation"])
    if result["failed_runs"]:
        print(f"failed runs (left out of the report): {result['failed_runs']}")
    print(f"report: {run_dir / 'report.html'} and report.md")


def serve(cfg: DictConfig) -> None:
    """flows/serve.py: the compare flow as a deployment on a Prefect server, on conf/schedule's cron."""
    run_dir, overrides = hydra_run()
    with exit_on_bad_input(run_dir):
        cfg = comparison(cfg, overrides)
        schedule = cron_schedule(cfg.schedule)  # before the flows (and torch) load: a bad cron stops in seconds
        from transferlab import flows

        runner = flows.task_runner(cfg.compare)
    out_dir = str(Path(cfg.schedule.out_dir).resolve())
    print(f"serving compare/{cfg.schedule.name}: cron '{schedule.cron}' ({schedule.timezone}); "
          f"report: {Path(out_dir) / 'report.html'}")
    flows.compare.with_options(task_runner=runner).serve(
        name=cfg.schedule.name, schedules=[schedule], print_starting_message=False,
        parameters={"cfg": OmegaConf.to_container(cfg, resolve=True), "out_dir": out_dir})


def cron_schedule(schedule: DictConfig):
    """schedule.cron/timezone as Prefect's CronSchedule; a bad string fails in one line naming the key.
    Prefect's croniter reads a 6th field as seconds, so a Quartz-style "0 0 3 * * *" would start a
    run every second of a minute: only the 5 documented fields (or an @daily-style macro) pass. An
    empty time zone passes Prefect's check and is shown as nothing: it must be named."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    fields = len(str(schedule.cron).split())
    if fields != 5 and not str(schedule.cron).startswith("@"):
        raise ConfigError(f"schedule.cron={schedule.cron!r}: {fields} fields; a cron string has 5 "
                          "(minute hour day-of-month month day-of-week)")
    if not schedule.timezone:
        raise ConfigError(f"schedule.timezone={schedule.timezone!r}: name an IANA time zone, e.g. UTC")
    try:
        return CronSchedule(cron=schedule.cron, timezone=schedule.timezone)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = "timezone" if "timezone" in error["loc"] else "cron"
        raise ConfigError(f"schedule.{key}={schedule[key]!r}: "
                          f"{error['msg'].removeprefix('Value error, ')}") from None
