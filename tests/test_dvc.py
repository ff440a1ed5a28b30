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
    return re.findall(r"Running stage '([\w@.-]+)'", output)


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
    (repo / "conf" / "compare" / "default.yaml").write_text(yaml.safe_dump({
        "strategies": ["linear_probe", "finetune_last_n"], "train_sizes": [12, "all"], "seeds": [0],
        "workers": 1, "tie_margin": 0.005}))
    last_n = repo / "conf" / "strategy" / "finetune_last_n.yaml"
    last_n.write_text(last_n.read_text() + "max_epochs: 2\n")
    write_params(repo / "params.yaml", conf_dir=repo / "conf")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"]):
        subprocess.run(cmd, cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    dvc(repo, "config", "hydra.enabled", "True")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


COMPARE = [f"compare@{s}-{n}-0" for s in ("linear_probe", "finetune_last_n") for n in (12, "all")]


def test_repro_noop_head_only_change_and_exp_run(repo):
    assert ran(dvc(repo, "repro")) == ["prepare", "extract", "train", "evaluate", *COMPARE, "report"]
    metrics = json.loads((repo / "artifacts" / "eval" / "metrics.json").read_text())
    assert metrics["strategy"] == "linear_probe" and metrics["test_accuracy"] > 0.8
    shown = dvc(repo, "metrics", "show", "--json")
    assert "test_accuracy" in shown and "finetune_last_n" in shown
    assert_comparison(repo)

    assert ran(dvc(repo, "repro")) == []

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["strategy"]["lr"] = 0.02  # the single run's strategy; the comparison's come from conf/strategy/
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
    assert "linear_probe.n12.test_accuracy" in dvc(repo, "exp", "show", "--csv")


def assert_comparison(repo):
    """The matrix's runs feed the report; dvc metrics/plots show the same numbers as the run files."""
    runs = {p.parent.name: json.loads(p.read_text()) for p in (repo / "artifacts" / "compare").glob("*/metrics.json")}
    assert set(runs) == {f"{s}-n{n}-s0" for s in ("linear_probe", "finetune_last_n") for n in (12, "all")}
    assert runs["finetune_last_n-n12-s0"]["epochs"] <= 2  # the strategy as conf/strategy/ says
    for size in (12, "all"):  # identical splits for both strategies
        assert runs[f"linear_probe-n{size}-s0"]["train_size"] == runs[f"finetune_last_n-n{size}-s0"]["train_size"]
    summary = json.loads((repo / "artifacts" / "report" / "summary.json").read_text())
    for m in runs.values():
        assert summary[m["strategy"]][f"n{m['train_size']}"]["test_accuracy"] == round(m["test_accuracy"], 4)
    assert summary["extraction_seconds"] > 0
    assert (repo / "artifacts" / "report" / "report.html").read_text().count("data:image/png;base64,") == 2
    plots = json.loads(dvc(repo, "plots", "show", "--json"))
    assert not plots.get("errors"), plots.get("errors")
    curve = [(p["field"], float(p["train_size"]), float(p["dvc_inferred_y_value"]))
             for p in plots["data"]["learning curves"][0]["content"]["data"]["values"]]
    assert sorted(curve) == sorted((m["strategy"], float(m["train_size"]), round(m["test_accuracy"], 6))
                                   for m in runs.values())
