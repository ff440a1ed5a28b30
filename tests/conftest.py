"""Shared fixtures: real small data, the real MiniLM, quiet offline settings for Prefect and HF."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
# One intra-op thread per process: the suite runs in 2 xdist workers on 2 cores, and the flows and
# dvc stages it starts inherit this; two threads each that wait on each other made small fits 3-5x
# slower. Set before torch is imported (it reads it once).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
for key, value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                   "PREFECT_LOGGING_LEVEL": "WARNING",
                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(key, value)

PYTHON = sys.executable

TOPICS = {
    "sport": ["The striker scored twice as the home team won the league match",
              "The tennis champion lost in the final set after a long rally",
              "The coach praised the defence after the cup victory on Saturday",
              "The runner broke the world record at the athletics championship"],
    "tech": ["The new smartphone ships with a faster processor and better camera",
             "Software developers released an update that fixes the security flaw",
             "The chip maker unveiled a graphics card for gaming computers",
             "Broadband providers are rolling out faster internet connections"],
    "business": ["Shares fell sharply after the company reported lower quarterly profits",
                 "The central bank raised interest rates to curb inflation",
                 "The retailer announced job cuts as sales slowed over the holidays",
                 "Oil prices climbed as investors worried about supply"],
}


def topic_frame(copies: int = 5) -> pd.DataFrame:
    """Small, real, separable text data: each topic's sentences with distinct numbered suffixes."""
    rows = [(f"{text} (report {i})", label) for label, texts in TOPICS.items()
            for i in range(copies) for text in texts]
    return pd.DataFrame(rows, columns=["text", "topic"])


@pytest.fixture
def topic_csv(tmp_path: Path) -> Path:
    path = tmp_path / "topics.csv"
    topic_frame().to_csv(path, index=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_DIR = "TRANSFERLAB_TEST_PREFECT_DIR"  # set by the controller; xdist workers inherit it
OWNS_SERVER = pytest.StashKey[bool]()


def pytest_configure(config):
    """The controller (or a run without xdist) owns one folder for the session's Prefect server.
    Under xdist it starts the server at once, so that its ~10 s start overlaps the workers' start
    and collection instead of holding up their first tests."""
    if SERVER_DIR not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="transferlab-prefect-"))
        os.environ[SERVER_DIR] = str(folder)
        config.stash[OWNS_SERVER] = True
        if config.getoption("numprocesses", None):
            start_prefect_server(folder)


# The suite's longest test (a real `dvc repro` + queued grid, 80-100 s of the ~240 s) starts first,
# while the other worker takes the rest; last in the queue it left one worker idle at the end.
LONGEST_FIRST = ("test_dvc.py",)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable: modules stay whole


def pytest_unconfigure(config):
    if config.stash.get(OWNS_SERVER, False):
        folder = Path(os.environ.pop(SERVER_DIR))
        if (folder / "server.json").exists():
            stop(json.loads((folder / "server.json").read_text())["pid"])
        shutil.rmtree(folder, ignore_errors=True)


def stop(pid: int, timeout: float = 30) -> None:
    """SIGTERM, then wait for it to go (reaped here: this process started it)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and os.waitpid(pid, os.WNOHANG)[0] != pid:
        time.sleep(0.2)


def start_prefect_server(folder: Path) -> None:
    """`prefect server start` on a free loopback port, in the background; its address and process
    in folder/server.json."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(folder / "home")}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([os.path.join(os.path.dirname(PYTHON), "prefect"), "server", "start",
                               "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (folder / "server.json").write_text(json.dumps({"api": f"http://127.0.0.1:{port}/api", "pid": server.pid}))


def wait_until_healthy(api: str, pid: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{api}/health", timeout=2)
            return
        except OSError:
            assert time.time() < deadline, "prefect server did not start"
            os.kill(pid, 0)  # ProcessLookupError: it died
            time.sleep(0.5)


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """A real `prefect server start` on loopback, as a team would run one: one for the whole test
    session, shared by the xdist workers (started by the controller, or here on first use without
    xdist: one process, no race). Flow subprocesses inherit PREFECT_API_URL and skip starting an
    ephemeral server each time."""
    folder = Path(os.environ[SERVER_DIR])
    if not (folder / "server.json").exists():
        start_prefect_server(folder)
    server = json.loads((folder / "server.json").read_text())
    wait_until_healthy(server["api"], server["pid"])
    os.environ["PREFECT_API_URL"] = server["api"]
    yield server["api"]
    os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="module")
def flows():
    from transferlab.entry import configure_prefect

    configure_prefect(ROOT)
    from transferlab import flows

    return flows


def task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def compare_run(flows, cfg, out: Path) -> tuple[dict, list]:
    """flows.compare on the configured task runner, in this process: its result and its task runs."""
    from omegaconf import OmegaConf

    state = flows.compare.with_options(task_runner=flows.task_runner(cfg.compare))(
        OmegaConf.to_container(cfg, resolve=True), str(out), return_state=True)
    return state.result(), task_runs(state.state_details.flow_run_id)


# Tests of logic train for the epochs they name: no fair-budget minimum of optimiser steps, and a
# validation every epoch (conf/strategy/finetune_full.yaml's min_steps and val_every_n_steps).
QUICK_BUDGET = ("strategy.min_steps=0", "strategy.val_every_n_steps=1")


def quick_compare(*overrides: str) -> str:
    """`compare.overrides=[...]` of `overrides` and QUICK_BUDGET, for every cell of a comparison."""
    return "compare.overrides=[" + ",".join(f"'{o}'" for o in (*overrides, *QUICK_BUDGET)) + "]"


def topic_config(root: Path, *overrides: str, tiny: bool = True):
    """A checked config on the topic data (written to root/topics.csv), its caches under root/cache;
    on the tiny randomly initialised encoder unless `tiny=False` (the real MiniLM, at 32 tokens)."""
    from tiny_encoder import overrides as tiny_overrides
    from transferlab.config import checked, compose

    topic_frame().to_csv(root / "topics.csv", index=False)
    backbone = tiny_overrides() if tiny else ["backbone.max_length=32"]
    return checked(compose(["data=csv", f"data.path={root / 'topics.csv'}", "data.label_column=topic",
                            *backbone, "trainer.enable_progress_bar=false", f"paths.cache_dir={root / 'cache'}",
                            *overrides]), "test")


def run_cell(cfg, run_dir: Path) -> dict:
    """One cell through transferlab.pipeline, as every front end runs it: the metrics."""
    from transferlab.pipeline import run_cell as pipeline_run_cell

    return pipeline_run_cell(cfg, run_dir)


def prepared_dir(cfg) -> Path:
    """Where run_cell's prepare step put the cell's splits."""
    from omegaconf import OmegaConf

    from transferlab.pipeline import prepared_dir as located

    return located(OmegaConf.to_container(cfg.data), cfg.seed, cfg.paths.cache_dir)
