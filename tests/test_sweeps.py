"""Hyperparameter searches: `python flows/adapt.py hparams_search=<name>` runs an Optuna study in
which every trial is a real Prefect flow run, scored by the metric the config names."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from transferlab.config import METRICS, checked, compose
from transferlab.errors import ConfigError

from conftest import PYTHON, ROOT, topic_frame
from test_flow import adapt
from tiny_encoder import overrides as tiny

SEARCHES = sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_composes_onto_its_strategy_and_passes_the_schema(search):
    cfg = checked(compose([f"hparams_search={search}"]), search)
    assert cfg.strategy.name == search.removesuffix("_optuna")
    assert cfg.optimized_metric.startswith("val_")  # never tuned on the test set


def test_unknown_search_or_metric_is_one_line():
    done = subprocess.run([PYTHON, "flows/adapt.py", "hparams_search=nope"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: hparams_search=nope: unknown hparams_search; choose one of {', '.join(SEARCHES)}"]
    with pytest.raises(ConfigError, match=r"^optimized_metric='val_acc': not a metric; choose one of .*val_accuracy"):
        checked(compose(["optimized_metric=val_acc"]), "config")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_optuna_search_runs_trials_as_flow_runs_and_reports_the_best(tmp_path, topic_csv):
    sweep = tmp_path / "sweep"
    done = adapt("hparams_search=linear_probe_optuna", "hydra.sweeper.n_trials=3", "data=csv",
                 f"data.path={topic_csv}", "data.label_column=topic", *tiny(),
                 f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    trials = {}  # the C the stage code trained with -> the trial's metrics.json
    for run in sorted(p for p in sweep.iterdir() if p.is_dir()):
        trained_with = yaml.safe_load((run / "config.yaml").read_text())["strategy"]["C"]
        trials[trained_with] = json.loads((run / "metrics.json").read_text())
    assert len(trials) == 3 and all(1e-3 <= c <= 1e3 for c in trials)  # 3 different samples, in range
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = max(m["val_accuracy"] for m in trials.values())
    assert results["best_value"] == best
    assert trials[results["best_params"]["strategy.C"]]["val_accuracy"] == best
    numeric = {k for k, v in next(iter(trials.values())).items() if isinstance(v, (int, float))}
    assert numeric - {"seed", "train_size", "val_size", "test_size"} == set(METRICS)  # config.METRICS stays true
    assert "setup plugin" not in done.stdout  # optuna's alembic import stays quiet
    assert "A new study created" not in done.stderr  # and optuna's own line: Hydra's "Study name" says it
    for m in trials.values():  # the runs table, printed into a pipe, shows its numbers whole (not "0.9…")
        assert re.search(rf"{m['test_accuracy']:.3f} +│ +{m['test_macro_f1']:.3f}", done.stdout)
    embedded = [json.loads(p.read_text())["items_embedded"] for p in (tmp_path / "cache" / "features").glob("*/meta.json")]
    assert sum(embedded) == len(topic_frame())  # every text embedded once, shared by the trials
    assert len([p for p in (tmp_path / "cache" / "prepared").iterdir() if p.is_dir()]) == 1  # prepared once, too
