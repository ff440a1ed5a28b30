"""`compare.task_runner=dask`: the compare flow's runs fan out to a local Dask cluster of worker
processes, and the result is the same report as with the thread runner."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from conftest import PYTHON, ROOT, topic_frame

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_compare_through_two_dask_worker_processes_writes_the_full_report(tmp_path):
    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    out = tmp_path / "compare"
    done = subprocess.run([PYTHON, "flows/compare.py", "data=csv", f"data.path={tmp_path / 'topics.csv'}",
                           "data.label_column=topic", "backbone.max_length=16", "strategy.max_epochs=20",
                           "compare.strategies=[linear_probe,mlp_head]", "compare.train_sizes=[12]",
                           "compare.task_runner=dask", "compare.workers=2",
                           f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in done.stdout

    metrics = {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/metrics.json")}
    assert set(metrics) == {"linear_probe-n12-s0", "mlp_head-n12-s0"}
    assert all(0 <= m["test_accuracy"] <= 1 and m["train_size"] == 12 for m in metrics.values())
    assert metrics["linear_probe-n12-s0"]["test_accuracy"] > 0.5  # three separable topics: well above chance
    for name in ("report.html", "report.md", "summary.json", "learning_curve.csv"):
        assert (out / name).is_file(), name
    assert len(pd.read_csv(out / "runs.csv")) == 2


def test_an_unknown_task_runner_fails_in_one_line_naming_the_key():
    from transferlab.config import checked, compose
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^compare.task_runner='ray': must be one of threads, dask$"):
        checked(compose(["compare.task_runner=ray"]), "test")
