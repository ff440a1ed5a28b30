"""Scheduled reruns as a team runs them: `flows/serve.py` serves the compare flow on a real Prefect
server with its cron schedule; a run refreshes the report in place, a second run with nothing
changed retrains nothing (its task runs are Cached), and a run after the data file changed reruns
every stage."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import PYTHON, ROOT, topic_frame
from tiny_encoder import overrides as tiny

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def wait_for_deployment(client, name: str, serve: subprocess.Popen, log, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.read_deployment_by_name(name)
        except Exception:  # ObjectNotFound until serve.py has registered it
            assert serve.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the deployment never appeared"
            time.sleep(0.5)


def task_states(client, flow_run_id) -> dict[str, list[str]]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    states: dict[str, list[str]] = {}
    for run in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))):
        states.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state.name)
    return states


STAGES = ("prepare", "extract", "train", "evaluate")


def completed_run(client, name: str, log) -> dict[str, list[str]]:
    """Trigger the deployment now, wait for the run to complete, and return its task states."""
    from prefect.deployments import run_deployment

    run = run_deployment(f"compare/{name}", timeout=240, poll_interval=1)
    assert run.state.is_completed(), log.read_text()[-3000:]
    return task_states(client, run.id)


def test_served_compare_refreshes_its_report_reruns_nothing_unchanged_and_everything_on_new_data(tmp_path):
    from prefect.client.orchestration import get_client

    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    out, log, name = tmp_path / "scheduled", tmp_path / "serve.log", f"nightly-{os.getpid()}"
    serve = subprocess.Popen(
        [PYTHON, "flows/serve.py", "data=csv", f"data.path={tmp_path / 'topics.csv'}", "data.label_column=topic",
         *tiny(), "compare.strategies=[linear_probe]", "compare.train_sizes=[12]",
         f"paths.cache_dir={tmp_path / 'cache'}", f"schedule.name={name}", "schedule.cron=30 2 * * 1",
         f"schedule.out_dir={out}", f"hydra.run.dir={tmp_path / 'serve'}"],
        cwd=ROOT, env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        with get_client(sync_client=True) as client:
            deployment = wait_for_deployment(client, f"compare/{name}", serve, log)
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules] == \
                [("30 2 * * 1", "UTC", True)]
            assert deployment.parameters["out_dir"] == str(out)
            assert deployment.parameters["cfg"]["compare"]["strategies"] == ["linear_probe"]

            completed_run(client, name, log)
            model = out / "runs" / "linear_probe-n12-s0" / "model.safetensors"
            assert (out / "report.html").is_file() and model.is_file()
            trained_at = model.stat().st_mtime_ns

            states = completed_run(client, name, log)
            assert all(states[t] == ["Cached"] for t in STAGES), states
            assert model.stat().st_mtime_ns == trained_at  # nothing retrained; the report rewritten
            assert (out / "report.md").stat().st_mtime_ns > trained_at

            topic_frame(copies=6).to_csv(tmp_path / "topics.csv", index=False)  # new data, same path
            states = completed_run(client, name, log)
            assert all(states[t] == ["Completed"] for t in STAGES), states
            assert model.stat().st_mtime_ns > trained_at

            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=60) == 0, log.read_text()[-3000:]
            assert client.read_deployment_by_name(f"compare/{name}").paused  # no runs pile up unserved
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


@pytest.mark.parametrize("key, value, message", [
    ("cron", "61 3 * * *", "schedule.cron='61 3 * * *': Invalid cron string"),
    ("timezone", "Mars/Base", "schedule.timezone='Mars/Base': Invalid timezone"),
    ("cron", "0 0 3 * * *", "schedule.cron='0 0 3 * * *': 6 fields; a cron string has 5"),  # croniter: seconds
    ("cron", "''", "schedule.cron='': 0 fields"),
    ("timezone", "''", "schedule.timezone='': name an IANA time zone"),
])
def test_a_bad_schedule_fails_in_one_line_naming_the_key(key, value, message):
    from transferlab.config import checked, compose
    from transferlab.errors import ConfigError
    from transferlab.entry import configure_prefect

    configure_prefect(ROOT)
    from transferlab.entry import cron_schedule

    cfg = checked(compose([f"schedule.{key}={value}"]), "test")
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")) as err:
        cron_schedule(cfg.schedule)
    assert "\n" not in str(err.value)
