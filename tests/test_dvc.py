"""`dvc repro` and `dvc exp run` in a temporary git repo: the same stages, rerun only when their inputs change."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from transferlab.config import write_params

from conftest import PYTHON, ROOT, topic_frame

pytestmark = pytest.mark.slow
BIN = os.path.dirname(PYTHON)


def dvc(repo, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([os.path.join(BIN, "dvc"), *args], cwd=repo, capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


@pytest.fixture
def repo(tmp_path):
    """A user's clone: the project's dvc.yaml, conf/ and code, defaults pointed at small local data."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "conf", "src"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, repo / name)
    topic_frame().to_csv(repo / "topics.csv", index=False)
    (repo / "conf" / "data" / "topics.yaml").write_text(yaml.safe_dump({
        "name": "topics", "source": "csv", "path": "topics.csv", "text_column": "text",
        "label_column": "topic", "val_fraction": 0.2, "test_fraction": 0.2, "train_size": None}))
    config = (repo / "conf" / "config.yaml").read_text().replace("data: bbc_news", "data: topics")
    (repo / "conf" / "config.yaml").write_text(config)
    (repo / "conf" / "backbone" / "minilm.yaml").write_text(
        (ROOT / "conf" / "backbone" / "minilm.yaml").read_text().replace("max_length: 128", "max_length: 32"))
    write_params(repo / "params.yaml", conf_dir=repo / "conf")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"]):
        subprocess.run(cmd, cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    dvc(repo, "config", "hydra.enabled", "True")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


def test_repro_noop_head_only_change_and_exp_run(repo):
    assert ran(dvc(repo, "repro")) == ["prepare", "extract", "train", "evaluate"]
    metrics = json.loads((repo / "artifacts" / "eval" / "metrics.json").read_text())
    assert metrics["strategy"] == "linear_probe" and metrics["test_accuracy"] > 0.8
    assert "test_accuracy" in dvc(repo, "metrics", "show")

    assert ran(dvc(repo, "repro")) == []

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["strategy"]["lr"] = 0.02
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc(repo, "repro")) == ["train", "evaluate"]

    # dvc exp run composes conf/ with -S overrides into params.yaml; they must reach the stage code
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=repo, check=True)
    out = dvc(repo, "exp", "run", "-S", "strategy.max_epochs=3")
    assert ran(out) == ["train", "evaluate"]
    metrics = json.loads((repo / "artifacts" / "eval" / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    assert yaml.safe_load((repo / "params.yaml").read_text())["strategy"]["max_epochs"] == 3
