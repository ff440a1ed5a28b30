"""`dvc repro`, a queued `dvc exp run` grid and `dvc push`/`pull` in a temporary git repo: the same
stages, rerun only when their inputs change, their outputs round-tripped through the project's
default remote."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from dvc.api import read as dvc_read
from dvc.repo import Repo

from transferlab.config import write_params

from conftest import PYTHON, QUICK_BUDGET, ROOT, topic_frame
from tiny_encoder import tiny_encoder

pytestmark = pytest.mark.slow
BIN = os.path.dirname(PYTHON)


def dvc(repo, *args: str, capture: bool = True) -> str:
    """capture=False: output to /dev/null, for commands that leave a daemon holding their pipes open."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = {"capture_output": True} if capture else {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    done = subprocess.run([os.path.join(BIN, "dvc"), *args], cwd=repo, text=True, env=env, timeout=600, **out)
    output = (done.stdout or "") + (done.stderr or "")
    assert done.returncode == 0, output[-4000:]
    return output


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@.-]+)'", output)


@pytest.fixture
def repo(tmp_path):
    """A user's clone: the project's dvc.yaml, conf/, code, .gitignore and DVC config (its default
    remote, hydra composition), defaults pointed at small local data."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "conf", "src", ".gitignore"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, repo / name)
    topic_frame().to_csv(repo / "topics.csv", index=False)
    (repo / "conf" / "data" / "topics.yaml").write_text(yaml.safe_dump({
        "name": "topics", "source": "csv", "path": "topics.csv", "text_column": "text",
        "label_column": "topic", "val_fraction": 0.2, "test_fraction": 0.2, "train_size": None}))
    config = (repo / "conf" / "config.yaml").read_text().replace("data: bbc_news", "data: topics")
    (repo / "conf" / "config.yaml").write_text(config)
    (repo / "conf" / "backbone" / "minilm.yaml").write_text(yaml.safe_dump({  # the tiny encoder: logic, not quality
        **yaml.safe_load((ROOT / "conf" / "backbone" / "hf_encoder.yaml").read_text()),
        "name": "hf_encoder", "model": str(tiny_encoder()), "max_length": 32}))
    (repo / "conf" / "compare" / "default.yaml").write_text(yaml.safe_dump({
        "strategies": ["linear_probe", "finetune_last_n"], "train_sizes": [12], "seeds": [0],
        "workers": 1, "tie_margin": 0.005, "overrides": ["strategy.max_epochs=2", *QUICK_BUDGET]}))
    write_params(repo / "params.yaml", conf_dir=repo / "conf")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"]):
        subprocess.run(cmd, cwd=repo, check=True)
    dvc(repo, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


COMPARE = ["compare@linear_probe-12-0", "compare@finetune_last_n-12-0"]  # train_size "all": test_compare


def test_repro_noop_queued_grid_and_remote(repo):
    """A head-only change (strategy.*) reruns only train and evaluate: the queued grid checks that."""
    assert ran(dvc(repo, "repro")) == ["prepare", "extract", "train", "evaluate", *COMPARE, "report"]
    metrics = json.loads((repo / "artifacts" / "eval" / "metrics.json").read_text())
    assert metrics["strategy"] == "linear_probe" and metrics["test_accuracy"] > 0.8
    assert embedded_items(repo) == len(topic_frame())  # extract and the comparison: each input once
    shown = dvc(repo, "metrics", "show", "--json")
    assert "test_accuracy" in shown and "finetune_last_n" in shown
    assert_comparison(repo)

    assert ran(dvc(repo, "repro")) == []

    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=repo, check=True)
    assert_queued_grid(repo)
    assert_push_pull_round_trip(repo)


def embedded_items(repo: Path) -> int:
    """How many inputs the feature stores under the repository embedded (a store embeds an input once)."""
    return sum(json.loads(p.read_text())["batches"][-1]["rows"][1] for p in repo.rglob("items/*/meta.json"))


def assert_comparison(repo):
    """The matrix's runs feed the report; dvc metrics/plots show the same numbers as the run files."""
    runs = {p.parent.name: json.loads(p.read_text()) for p in (repo / "artifacts" / "compare").glob("*/metrics.json")}
    assert set(runs) == {"linear_probe-n12-s0", "finetune_last_n-n12-s0"}
    assert runs["finetune_last_n-n12-s0"]["epochs"] <= 2  # conf/strategy/ + compare.overrides, as the flow
    assert runs["linear_probe-n12-s0"]["train_size"] == runs["finetune_last_n-n12-s0"]["train_size"] == 12
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


def run_queue(repo, names: list[str], timeout: float = 600) -> str:
    """`dvc queue start -j 2` (the two experiments at once), `dvc queue logs --follow` of each until it
    ends (one waiting process each, not a poll every few seconds: every dvc command costs seconds of
    CPU), then `dvc queue status` until no worker is left; a worker exits by itself once the queue is
    empty. The start command keeps its stdout open until then, so that output is not read. (No
    `dvc queue stop`: sent to no live worker, it stops the next one.)"""
    dvc(repo, "queue", "start", "-j", "2", capture=False)
    deadline = time.time() + timeout
    for name in names:
        while "Queued" in (line := next((l for l in dvc(repo, "queue", "status").splitlines() if name in l), "")):
            assert time.time() < deadline, line
            time.sleep(2)
        dvc(repo, "queue", "logs", "--follow", name)
    while re.search(r"\b(Queued|Running)\b|\b[1-9]\d* active\b", status := dvc(repo, "queue", "status")):
        assert time.time() < deadline, status
        time.sleep(2)
    return status


def assert_queued_grid(repo):
    """`dvc exp run --queue -S a=x,y -S b=z` composes conf/ with each combination into params.yaml,
    one queued experiment each. Each runs in a temporary copy of the workspace, and only the stages the
    changed parameters feed run there: the comparison is not recomputed (it would have to extract its
    features again, as the gitignored paths.cache_dir is absent from the copy)."""
    out = dvc(repo, "exp", "run", "--queue", "-S", "strategy.C=0.1,10", "-S", "strategy.max_epochs=3")
    queued = re.findall(r"Queued experiment '([\w-]+)'", out)
    assert len(queued) == 2
    status = run_queue(repo, queued)
    for name in queued:
        assert re.search(rf"{name}\s+.*\bSuccess\b", status), status + dvc(repo, "queue", "logs", name)
        assert ran(dvc(repo, "queue", "logs", name)) == ["train", "evaluate"]
    shown = dvc(repo, "exp", "show", "--csv")
    assert "linear_probe.n12.test_accuracy" in shown  # the comparison's summary, carried into each experiment
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(shown))}
    for name, c in zip(queued, (0.1, 10.0)):
        row = rows[name]
        assert (float(row["strategy.C"]), row["strategy.max_epochs"]) == (c, "3") and 1 <= int(row["epochs"]) <= 3
        assert 0 <= float(row["val_accuracy"]) <= 1
        trained = yaml.safe_load(dvc_read("artifacts/model/config.yaml", repo=str(repo), rev=name))
        assert trained["strategy"]["C"] == c  # the override reached the stage code


def sha256s(repo: Path, outs: list[str]) -> dict[str, str]:
    files = [p for out in outs for p in ([repo / out] if (repo / out).is_file() else (repo / out).rglob("*"))]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def assert_push_pull_round_trip(repo):
    """Every cached output goes to the project's default remote (a folder beside the clone) and comes
    back byte-identical with no outputs and no cache left; git-tracked metrics (cache: false) stay out."""
    with Repo(str(repo)) as project:
        uses_cache = {out.def_path: out.use_cache for out in project.index.outs}
    cached = sorted(path for path, use in uses_cache.items() if use)
    assert {"artifacts/data", "artifacts/features", "artifacts/model"} <= set(cached)
    assert not uses_cache["artifacts/eval/metrics.json"] and not uses_cache["artifacts/report/summary.json"]
    before = sha256s(repo, cached)
    assert "artifacts/model/model.safetensors" in before and any(p.endswith(".parquet") for p in before)
    assert re.search(r"\d+ files pushed", dvc(repo, "push"))
    assert (repo.parent / "transferlab-dvc-remote" / "files" / "md5").is_dir()  # ../../ from .dvc/
    shutil.rmtree(repo / ".dvc" / "cache")
    for path in cached:
        (shutil.rmtree if (repo / path).is_dir() else os.remove)(repo / path)
    dvc(repo, "pull")
    assert sha256s(repo, cached) == before
    assert "Data and pipelines are up to date." in dvc(repo, "status")


def test_report_without_the_feature_cache_refuses(repo):
    """The report costs feature extraction from paths.cache_dir, which no stage outputs: a report-only
    rerun where it is absent (a queued experiment's copy, a fresh clone after `dvc pull`) stops in one
    line naming the key, instead of writing extraction_seconds 0.0 into summary.json and the report."""
    params_file, summary_file = repo / "params.yaml", repo / "artifacts" / "report" / "summary.json"
    params = yaml.safe_load(params_file.read_text())
    params["compare"]["strategies"] = ["linear_probe"]
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro", "report")
    measured = json.loads(summary_file.read_text())["extraction_seconds"]
    assert measured > 0
    shutil.rmtree(repo / ".cache")
    params["compare"]["tie_margin"] = 0.01  # the report alone reruns
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([os.path.join(BIN, "dvc"), "repro", "report"], cwd=repo, text=True, env=env,
                          capture_output=True, timeout=600)
    assert done.returncode != 0 and ran(done.stdout) == ["report"], done.stdout + done.stderr
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("transferlab report:")]
    assert len(errors) == 1 and "paths.cache_dir=.cache/transferlab" in errors[0], done.stdout + done.stderr
    assert not summary_file.exists() or json.loads(summary_file.read_text())["extraction_seconds"] == measured


def test_dvc_parses_its_yaml_in_c():
    """DVC reads dvc.yaml, dvc.lock and params.yaml through ruamel.yaml's safe loader. Since ruamel.yaml
    0.19.1 its C parser (ruamel.yaml.clib) is a dependency of ours, not of ruamel.yaml: without it a
    no-op `dvc repro` of this project parsed for ~1 s more (2.3-3.1 s against 1.4-1.9 s)."""
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__name__ == "CParser"
