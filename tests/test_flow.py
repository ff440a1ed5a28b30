"""The Prefect flow as a user runs it: `python flows/adapt.py` with Hydra overrides, in real subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import PYTHON, ROOT, topic_frame

pytestmark = pytest.mark.slow


def adapt(*overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "flows/adapt.py", *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture
def data_overrides(tmp_path):
    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    return ["data=csv", f"data.path={tmp_path / 'topics.csv'}", "data.label_column=topic",
            "backbone.max_length=32", f"paths.cache_dir={tmp_path / 'cache'}"]


def test_run_dir_override_cache_reuse_and_multirun(tmp_path, data_overrides):
    first = adapt(*data_overrides, "strategy=linear_probe", "strategy.max_epochs=20",
                  f"hydra.run.dir={tmp_path / 'single'}")
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["strategy"] == "linear_probe" and metrics["trainable_params"] == 384 * 3 + 3
    assert f"results: {tmp_path / 'single' / 'metrics.json'}" in first.stdout
    features = list((tmp_path / "cache" / "features").glob("*/*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in features}
    assert len(stamps) == 3

    sweep = adapt("-m", *data_overrides, "strategy=linear_probe,finetune_full", "strategy.max_epochs=1",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    runs = {json.loads(p.read_text())["strategy"]: json.loads(p.read_text())
            for p in (tmp_path / "sweep").glob("*/metrics.json")}
    assert set(runs) == {"linear_probe", "finetune_full"}
    assert runs["finetune_full"]["trainable_params"] == runs["finetune_full"]["total_params"]
    assert runs["linear_probe"]["trainable_params"] < runs["linear_probe"]["total_params"] / 1000
    assert {p: p.stat().st_mtime_ns for p in features} == stamps  # extracted once, reused
    assert len(list((tmp_path / "cache" / "prepared").iterdir())) == 1  # prepare, too
    assert "finetune_full" in sweep.stdout and "linear_probe" in sweep.stdout  # the summary table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_flow_runs_against_a_prefect_server(tmp_path, data_overrides):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": ""}
    server = subprocess.Popen([os.path.join(os.path.dirname(PYTHON), "prefect"), "server", "start",
                               "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{api}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "prefect server did not start"
                time.sleep(1)
        run = adapt(*data_overrides, "strategy.max_epochs=5", f"hydra.run.dir={tmp_path / 'run'}",
                    env={"PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "prefect")})
        assert run.returncode == 0, run.stderr[-3000:]
        assert (tmp_path / "run" / "metrics.json").is_file()
        request = urllib.request.Request(f"{api}/flow_runs/filter", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        flow_runs = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert [r["state_type"] for r in flow_runs] == ["COMPLETED"]
    finally:
        server.terminate()
        server.wait(timeout=30)
