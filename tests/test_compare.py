"""A real small comparison through flows/compare.py: runs, shared features, the report, its numbers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import PYTHON, ROOT, quick_compare, topic_frame
from tiny_encoder import overrides as tiny

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_two_strategies_two_sizes_on_two_dask_workers_make_a_report_whose_numbers_are_the_metrics(tmp_path):
    """The runs fan out to a local Dask cluster of 2 worker processes (compare.task_runner=dask);
    test_schedule's served runs take the default thread runner."""
    topic_frame().to_csv(tmp_path / "topics.csv", index=False)
    out = tmp_path / "compare"
    done = subprocess.run([PYTHON, "flows/compare.py", "data=csv", f"data.path={tmp_path / 'topics.csv'}",
                           "data.label_column=topic", *tiny(), quick_compare("strategy.max_epochs=2"),
                           "compare.strategies=[linear_probe,finetune_full]", "compare.train_sizes=[12,all]",
                           "compare.seeds=[0]", "compare.task_runner=dask", "compare.workers=2",
                           f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in done.stdout
    dask_lines = [line for line in (done.stdout + done.stderr).splitlines()  # its loggers' lines, not Prefect's
                  if re.search(r"distributed\.(?!deploy\.local\.LocalCluster`)", line)]
    assert not dask_lines, dask_lines[:5]  # no scheduler/nanny banners, no shutdown warnings

    metrics = {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/metrics.json")}
    assert set(metrics) == {f"{s}-n{n}-s0" for s in ("linear_probe", "finetune_full") for n in (12, "all")}
    for size in (12, "all"):  # identical splits: every strategy saw the same training rows, in order
        assert metrics[f"linear_probe-n{size}-s0"]["train_size"] == metrics[f"finetune_full-n{size}-s0"]["train_size"]
        seen = [yaml.safe_load((out / "runs" / f"{s}-n{size}-s0" / "config.yaml").read_text())
                for s in ("linear_probe", "finetune_full")]
        assert seen[0]["data"] == seen[1]["data"] and seen[0]["seed"] == seen[1]["seed"]
        tested = [pd.read_csv(out / "runs" / f"{s}-n{size}-s0" / "predictions.csv")[["text", "actual"]]
                  for s in ("linear_probe", "finetune_full")]
        assert tested[0].equals(tested[1])  # the same test items, in the same order
    assert yaml.safe_load((out / "runs" / "finetune_full-n12-s0" / "config.yaml").read_text())[
        "strategy"]["max_epochs"] == 2  # compare.overrides reached the cell
    assert same_training_rows(out, tmp_path / "cache")

    features = list((tmp_path / "cache" / "features").glob("*/meta.json"))
    embedded = [json.loads(p.read_text())["items_embedded"] for p in features]
    assert sum(embedded) == len(topic_frame())  # every text embedded exactly once across sizes

    runs = pd.read_csv(out / "runs.csv")
    for name, m in metrics.items():
        row = runs[(runs["strategy"] == m["strategy"]) & (runs["train_size"] == m["train_size"])].iloc[0]
        assert row["test_accuracy"] == m["test_accuracy"] and row["train_seconds"] == m["train_seconds"]
    report = (out / "report.md").read_text()
    for m in metrics.values():  # single seed: the table shows each run's accuracy as is
        assert f"{m['train_size']}: {100 * m['test_accuracy']:.1f}" in report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and 'id="seed-table"' in html
    assert re.search(r"\d+(-\d+)? labels: use (fine-tune|transfer learning) \(", report)
    summary = json.loads((out / "summary.json").read_text())
    for verdict in summary["verdicts"].values():  # the paired interval holds the lead, per seed p-values too
        assert verdict["ci_low"] <= verdict["lead"] <= verdict["ci_high"] and len(verdict["per_seed_p"]) == verdict["seeds"]
    assert 'id="ledger"' in html
    assert_renders_in_chromium(out / "report.html", tmp_path)


def same_training_rows(out, cache) -> bool:
    """Every run at a size and seed trained on the very same rows: the prepared split each run's
    config resolves to (its content address) is one folder, and its train rows are identical."""
    from omegaconf import OmegaConf

    from transferlab.pipeline import prepared_dir

    by_cell: dict = {}
    for config in (out / "runs").glob("*/config.yaml"):
        cfg = OmegaConf.load(config)
        folder = prepared_dir(OmegaConf.to_container(cfg.data), cfg.seed, cache)
        by_cell.setdefault((cfg.data.train_size, cfg.seed), set()).add(folder)
    rows = {cell: pd.read_parquet(next(iter(folders)) / "train.parquet")["text"].tolist()
            for cell, folders in by_cell.items()}
    return all(len(folders) == 1 for folders in by_cell.values()) and len(rows[(12, 0)]) == 12 \
        and set(rows[(12, 0)]) < set(rows[(None, 0)])


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def assert_renders_in_chromium(page, tmp_path):
    """Headless Chromium (Debian's; .ci/run installs it): the table and both plots render, no console errors."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: apt-get install -y chromium"
    run = lambda *extra: subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}",
                                         *extra, page.as_uri()], capture_output=True, text=True, timeout=120)
    dom = run("--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="seed-table"' in dom.stdout and dom.stdout.count("<img") == 2
    shot = run("--window-size=1200,1600", f"--screenshot={tmp_path / 'report.png'}")
    assert shot.returncode == 0 and (tmp_path / "report.png").stat().st_size > 20_000
    console = [line for line in dom.stderr.splitlines() + shot.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console


def test_an_unknown_task_runner_fails_in_one_line_naming_the_key():
    from transferlab.config import checked, compose
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^compare.task_runner='ray': must be one of threads, dask$"):
        checked(compose(["compare.task_runner=ray"]), "test")
