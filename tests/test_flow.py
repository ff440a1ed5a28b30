"""The Prefect flow as a user runs it: `python flows/adapt.py` with Hydra overrides, in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest

from conftest import PYTHON, ROOT, topic_frame

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def adapt(*overrides: str, ephemeral: bool = False) -> subprocess.CompletedProcess:
    """ephemeral: no PREFECT_API_URL, so Prefect starts its own temporary server, as on a fresh machine."""
    env = {k: v for k, v in os.environ.items() if not (ephemeral and k == "PREFECT_API_URL")}
    return subprocess.run([PYTHON, "flows/adapt.py", *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.fixture
def data_overrides(tmp_path):
    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    return ["data=csv", f"data.path={tmp_path / 'topics.csv'}", "data.label_column=topic",
            "backbone.max_length=32", f"paths.cache_dir={tmp_path / 'cache'}"]


def test_run_dir_override_on_an_ephemeral_server(tmp_path, data_overrides):
    """Multirun and the cache shared by its jobs: tests/test_sweeps.py."""
    first = adapt(*data_overrides, "strategy=linear_probe", "strategy.max_epochs=20",
                  f"hydra.run.dir={tmp_path / 'single'}", ephemeral=True)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["strategy"] == "linear_probe" and metrics["trainable_params"] == 384 * 3 + 3
    assert f"results: {tmp_path / 'single' / 'metrics.json'}" in first.stdout
    assert len(list((tmp_path / "cache" / "features").glob("*/*.safetensors"))) == 3  # train, val, test


def completed_flow_runs(api: str) -> int:
    request = urllib.request.Request(f"{api}/flow_runs/count", method="POST",
                                     data=json.dumps({"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def test_flow_runs_against_a_prefect_server(tmp_path, data_overrides, prefect_api):
    before = completed_flow_runs(prefect_api)
    run = adapt(*data_overrides, "strategy.max_epochs=5", f"hydra.run.dir={tmp_path / 'run'}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert completed_flow_runs(prefect_api) == before + 1
