"""Bad input, run as a user runs it: one `error:` line naming the problem, a non-zero exit, no output.

Each case is a real subprocess of `python flows/adapt.py ...` (Hydra + Prefect) or of the
`transferlab` command that dvc.yaml calls, so what is asserted is exactly what a user would see.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT, topic_frame
from omegaconf import OmegaConf

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

TRANSFERLAB = Path(PYTHON).parent / "transferlab"  # the console script dvc.yaml's stages call


def adapt(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The flow with the user's overrides; its run dir and caches kept under tmp_path."""
    return subprocess.run(
        [PYTHON, "flows/adapt.py", *overrides,
         f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def error_line(proc: subprocess.CompletedProcess, prefix: str = "error: ") -> str:
    """The whole of stderr, blank lines aside, must be one line: the error."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(prefix), proc.stderr
    return lines[0]


def assert_failed_cleanly(proc: subprocess.CompletedProcess, tmp_path: Path) -> str:
    """Non-zero exit, no run dir (no metrics, no model, no Hydra files), nothing prepared or cached."""
    assert proc.returncode != 0, proc.stdout
    assert "results:" not in proc.stdout
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "cache").exists()
    return error_line(proc)


def test_flow_missing_data_file(tmp_path):
    missing = tmp_path / "no_such.csv"
    line = assert_failed_cleanly(adapt(tmp_path, "data=csv", f"data.path={missing}"), tmp_path)
    assert str(missing) in line and "not found" in line and "data.path" in line


def test_flow_csv_without_the_label_column(tmp_path):
    csv = tmp_path / "untitled.csv"
    topic_frame().rename(columns={"topic": "category"}).to_csv(csv, index=False)
    proc = adapt(tmp_path, "data=csv", f"data.path={csv}", "data.label_column=topic")
    line = assert_failed_cleanly(proc, tmp_path)
    assert str(csv) in line and "'topic'" in line and "data.label_column" in line
    assert "category" in line  # the columns that are there, to spot the right name


def test_flow_single_class(tmp_path):
    csv = tmp_path / "sport_only.csv"
    frame = topic_frame()
    frame[frame.topic == "sport"].to_csv(csv, index=False)
    proc = adapt(tmp_path, "data=csv", f"data.path={csv}", "data.label_column=topic")
    line = assert_failed_cleanly(proc, tmp_path)
    assert "at least 2 classes" in line and "sport" in line


def test_flow_unknown_strategy(tmp_path):
    line = assert_failed_cleanly(adapt(tmp_path, "strategy=nope"), tmp_path)
    assert line.startswith("error: strategy=nope")
    assert "linear_probe" in line and "finetune_full" in line  # the options that exist


def params_file(tmp_path: Path, edit) -> Path:
    """A copy of the repository's params.yaml, edited by `edit(params)`, artifacts kept under tmp_path."""
    params = OmegaConf.to_container(OmegaConf.load(ROOT / "params.yaml"))
    params["paths"]["artifacts_dir"] = str(tmp_path / "artifacts")
    edit(params)
    path = tmp_path / "params.yaml"
    OmegaConf.save(params, path)
    return path


def prepare_stage(params: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(TRANSFERLAB), "prepare", "--params", str(params)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_dvc_prepare_missing_data_file(tmp_path):
    missing = tmp_path / "no_such.csv"
    proc = prepare_stage(params_file(tmp_path, lambda p: p["data"].update(source="csv", path=str(missing))))
    assert proc.returncode != 0
    line = error_line(proc, prefix="transferlab prepare: error: ")
    assert str(missing) in line and "data.path" in line
    assert not (tmp_path / "artifacts").exists()


def test_dvc_prepare_misspelt_key(tmp_path):
    params = params_file(tmp_path, lambda p: p["data"].update(trian_size=p["data"].pop("train_size")))
    proc = prepare_stage(params)
    assert proc.returncode != 0
    line = error_line(proc, prefix="transferlab prepare: error: ")
    assert str(params) in line and "data.trian_size" in line
    assert not (tmp_path / "artifacts").exists()
