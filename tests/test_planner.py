"""compare.budget: the planner never schedules past the budget, skips what does not fit, halves on
validation, stops an overrunning fit, and writes plan.json; a real budgeted compare flow names its
skipped cells in the report. Time is virtual where the test needs decisions to be exact: the real
steps run, and each evaluated cell advances a clock by what the injected cost model says it costs."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import PYTHON, QUICK_BUDGET, ROOT, compare_run, quick_compare, run_cell, topic_config, topic_frame
from tiny_encoder import overrides as tiny_encoder

from transferlab import planner
from transferlab.errors import ConfigError, TransferlabError
from transferlab.pipeline import ProbedCosts, Steps, grid, reported, run_budgeted_grid
from transferlab.report.render import not_bought

COSTS = {"finetune_full": {12: 10.0, 24: 20.0, "all": 40.0}, "lora": {12: 5.0, 24: 10.0, "all": 20.0}}


class Costs:
    """An injected cost model: seconds per fine-tuning cell by strategy and size."""

    def __init__(self, table: dict) -> None:
        self.table = table

    def predict(self, strategy: str, size) -> dict[str, float]:
        return {"load": 0.0, "train": self.table[strategy][size], "evaluate": 0.0}

    def learn(self, strategy: str, size, run_dirs: list[Path]) -> None:
        """Fixed costs: what ran teaches it nothing."""

    def record(self) -> dict:
        return {}


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedSteps(Steps):
    """The real steps; a fine-tuning cell, once evaluated, has taken its modelled seconds."""

    def __init__(self, clock: VirtualClock, table: dict) -> None:
        self.clock, self.table = clock, table

    def evaluate(self, data_dir, features_dir, run_dir, after=None):
        metrics = super().evaluate(data_dir, features_dir, run_dir, after)
        strategy, rest = Path(run_dir).name.rsplit("-n", 1)
        size = rest.rsplit("-s", 1)[0]
        if strategy in self.table:
            self.clock.now += self.table[strategy][size if size == "all" else int(size)]
        return metrics


def budgeted(tmp_path: Path, budget: str, *overrides: str):
    return topic_config(tmp_path, "compare.strategies=[linear_probe,finetune_full,lora]",
                        "compare.train_sizes=[12,24,all]", "compare.seeds=[0,1]", f"compare.budget={budget}",
                        quick_compare("strategy.max_epochs=1"), *overrides)


def test_the_plan_fits_the_budget_smallest_sizes_first_all_seeds_or_none(tmp_path):
    clock = VirtualClock()
    result = run_budgeted_grid(budgeted(tmp_path, "100s"), tmp_path / "out", TimedSteps(clock, COSTS),
                               costs=Costs(COSTS), clock=clock)
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    status = {c["cell"]: c["status"] for c in plan["cells"]}
    # heads cost nothing here and all run; 12: 2x10 + 2x5, 24: 2x20 + 2x10 = 90 s; 'all' (80 s, 40 s) does not fit
    assert {k for k, v in status.items() if v == "ran"} == {
        f"{s}-n{n}-s{seed}" for s in ("linear_probe", "finetune_full", "lora") for n in (12, 24) for seed in (0, 1)
    } | {"linear_probe-nall-s0", "linear_probe-nall-s1"}
    skipped = [c for c in plan["cells"] if c["status"] == "skipped"]
    assert {c["cell"] for c in skipped} == {"finetune_full-nall-s0", "finetune_full-nall-s1",
                                           "lora-nall-s0", "lora-nall-s1"}
    assert all("of the budget left" in c["reason"] for c in skipped)
    ran_cost = sum(c["predicted_seconds"] for c in plan["cells"] if c["status"] == "ran" and c["kind"] != "head")
    assert ran_cost <= plan["budget_seconds"] and plan["spent_seconds"] <= plan["budget_seconds"]
    assert result["plan"] == plan
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Budget" in report and all(c["cell"] in report for c in skipped)
    assert "Not bought by the budget: finetune_full at all (" in report and "; lora at all (" in report
    assert "finetune_full: no forecast (measured at 2 sizes; a learning curve needs 4)" in report
    budget = report.split("## Budget")[1]
    assert "nan" not in budget.lower()  # heads are not predicted, skipped cells not measured: '-'


def test_a_size_not_bought_gets_the_fine_tuning_forecast_marked_as_such():
    """finetune_full measured at 4 sizes on a known curve, skipped at 'all' (3000 rows): the report's
    line names the head's measured accuracy there and the curve's forecast, within its band."""
    def truth(n: float) -> float:
        return 0.9 - 0.6 * n ** -0.4

    rows = [{"strategy": "finetune_full", "kind": "finetune", "train_size": n, "seed": seed,
             "test_accuracy": truth(n) + 0.004 * (seed - 1), "metrics_file": f"runs/finetune_full-n{n}-s{seed}/m.json"}
            for n in (50, 100, 200, 400) for seed in (0, 1, 2)]
    rows += [{"strategy": "linear_probe", "kind": "head", "train_size": 3000, "seed": 0, "test_accuracy": 0.8,
              "metrics_file": "runs/linear_probe-nall-s0/m.json"}]
    plan = {"cells": [{"cell": "finetune_full-nall-s0", "strategy": "finetune_full", "train_size": "all",
                       "kind": "finetune", "status": "skipped"}]}
    line = not_bought(plan, pd.DataFrame(rows))
    assert line.startswith("Not bought by the budget: finetune_full at all (3000) labels.")
    assert "Where no fine-tuning ran, transfer learning measured: linear_probe 80.0% at 3000." in line
    forecast = re.search(r"finetune_full forecast \(not measured\): ([\d.]+)% at 3000 \(80% band ([\d.]+)-([\d.]+)\)",
                         line)
    assert forecast, line
    value, low, high = (float(g) / 100 for g in forecast.groups())
    assert low <= value <= high and abs(value - truth(3000)) < 0.02


def test_no_cell_starts_that_does_not_fit_in_what_is_left(tmp_path):
    """25 s: finetune_full at 12 (20 s for both seeds) fits, lora at 12 (10 s) no longer does; no
    larger size of either runs."""
    clock = VirtualClock()
    run_budgeted_grid(budgeted(tmp_path, "25s"), tmp_path / "out", TimedSteps(clock, COSTS),
                      costs=Costs(COSTS), clock=clock)
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    ran = {c["cell"] for c in plan["cells"] if c["status"] == "ran" and c["kind"] != "head"}
    assert ran == {"finetune_full-n12-s0", "finetune_full-n12-s1"}
    assert clock.now <= 25.0
    reasons = {c["cell"]: c["reason"] for c in plan["cells"]}
    assert "of the budget left" in reasons["lora-n12-s0"]
    assert reasons["lora-n24-s0"] == "did not fit at 12 labels"


def test_successive_halving_keeps_strategies_within_noise_of_the_best_on_validation():
    # 200 validation items: a 2-point gap is noise, a 15-point gap is not
    assert planner.survivors({"finetune_full": 0.90, "lora": 0.88, "llrd": 0.75}, 200) == ["finetune_full", "lora"]
    assert planner.survivors({"finetune_full": 0.90, "lora": 0.88}, 20000) == ["finetune_full"]
    assert planner.survivors({}, 100) == []


@pytest.mark.parametrize("budget, predicted, limit, why", [
    ("1h", 0.1, 1, "stopped at 2x its predicted training time"),  # max_time's floor: 1 s
    ("6.8s", 1.0, 1, "stopped at its share of what was left of the budget"),  # (6.8 - 5) s left < 2 x 1 s
])
def test_a_fit_past_its_limit_is_stopped_and_reported(tmp_path, budget, predicted, limit, why):
    """A fit gets Lightning's max_time at twice its predicted training time, or at what is left of
    the budget when that is sooner; 2000 epochs take longer than either."""
    clock = VirtualClock()
    table = {"finetune_full": {12: predicted}}
    cfg = topic_config(tmp_path, "compare.strategies=[finetune_full]", "compare.train_sizes=[12]", "compare.seeds=[0]",
                       f"compare.budget={budget}", quick_compare("strategy.max_epochs=2000", "strategy.patience=2000"))
    run_budgeted_grid(cfg, tmp_path / "out", TimedSteps(clock, table), costs=Costs(table), clock=clock)
    (cell,) = json.loads((tmp_path / "out" / "plan.json").read_text())["cells"]
    assert (cell["status"], cell["reason"], cell["max_train_seconds"]) == ("stopped", why, limit)
    card = json.loads((tmp_path / "out" / "runs" / "finetune_full-n12-s0" / "model.json").read_text())
    assert card["stopped_by_max_time"] and card["epochs"] < 2000
    assert limit <= card["train_seconds"] < limit + 5  # the stop came at the limit
    # the advice says that the verdict there judges a shortened fit, not only the Budget table
    assert ("Stopped by the budget before their training schedule ended: finetune_full at 12 labels (1 of 1 "
            "seeds)") in (tmp_path / "out" / "report.md").read_text()


def test_a_finished_fit_rerun_under_a_shorter_limit_is_not_reported_stopped(tmp_path):
    """A budgeted compare rerun in its folder gives a fit a new max_time (the limit follows the time
    left); the finished fit resumes from its last.ckpt, whose Timer holds the time it took, past the
    new limit. Nothing is cut short, so neither model.json nor the report may call it stopped (QA:
    a rerun reported two complete 104-step fits as 'stopped by the budget' that 'may understate
    fine-tuning')."""
    cfg = topic_config(tmp_path, "strategy=finetune_full", "strategy.max_epochs=3", *QUICK_BUDGET)
    first = copy.deepcopy(cfg)
    first.trainer.max_time = "00:00:10:00"  # a budgeted run's fit, which finishes well within its limit
    run = tmp_path / "run"
    expected = run_cell(first, run)
    rerun = copy.deepcopy(cfg)
    rerun.trainer.max_time = "00:00:00:00"  # a limit already behind the time the fit took
    assert run_cell(rerun, run)["test_accuracy"] == expected["test_accuracy"]
    card = json.loads((run / "model.json").read_text())
    assert card["resumed_after_epoch"] == 2 and not card["stopped_by_max_time"]


def test_a_budgeted_rerun_in_its_folder_plans_finished_cells_as_free(tmp_path):
    """QA: a budgeted rerun in its folder re-probed the machine and planned the fine-tunes it had
    finished at full cost, so under load it bought less than the first run had and its report
    changed. A cell whose fit finished there costs nothing now (plain steps resume it at its end);
    another fit in that folder (other settings) is no such cell."""
    table = {"finetune_full": {12: 10.0, 24: 20.0}}
    def cfg(budget: str, *overrides: str):
        return topic_config(tmp_path, "compare.strategies=[finetune_full]", "compare.train_sizes=[12,24]",
                            "compare.seeds=[0,1]", f"compare.budget={budget}",
                            quick_compare("strategy.max_epochs=2", *overrides))

    out, clock = tmp_path / "out", VirtualClock()
    run_budgeted_grid(cfg("30s"), out, TimedSteps(clock, table), costs=Costs(table), clock=clock)
    first = json.loads((out / "plan.json").read_text())
    assert [c["status"] for c in first["cells"]] == ["ran", "skipped", "ran", "skipped"]  # n12, n24 x 2 seeds
    cards = {c: (out / "runs" / c / "model.json").read_text() for c in ("finetune_full-n12-s0", "finetune_full-n12-s1")}
    assert all(json.loads(card)["epochs"] == 2 for card in cards.values())
    # 8 s: 3 s after the report's 5, less than the 20 s the two finished seeds are predicted to take
    run_budgeted_grid(cfg("8s"), out, Steps(), costs=Costs(table))
    plan = {c["cell"]: c for c in json.loads((out / "plan.json").read_text())["cells"]}
    for name, card in cards.items():
        assert (plan[name]["status"], plan[name]["predicted_seconds"]) == ("ran", 0.0)
        assert plan[name]["reason"] == "finished by an earlier run in this folder: not trained again"
        assert json.loads((out / "runs" / name / "model.json").read_text())["epochs"] == json.loads(card)["epochs"]
    assert plan["finetune_full-n24-s0"]["status"] == "skipped"
    assert "finetune_full-n12-s1" in (out / "report.md").read_text()
    # another learning rate: the fits in the folder are not this comparison's, and nothing else is
    with pytest.raises(ConfigError, match=r"^compare\.budget='8s': it bought none of the 4 cells \(.*plan\.json"):
        run_budgeted_grid(cfg("8s", "strategy.lr=1e-3"), out, Steps(), costs=Costs(table))
    plan = {c["cell"]: c for c in json.loads((out / "plan.json").read_text())["cells"]}
    assert [plan[c]["status"] for c in cards] == ["skipped", "skipped"]


def test_a_budget_that_skips_every_cell_on_features_still_reports(tmp_path):
    """lp_ft, the only strategy on features, skipped by the budget on a cold cache: nothing was
    embedded and no reported cell needs it priced, so the report of finetune_full comes out."""
    table = {"finetune_full": {12: 1.0}, "lp_ft": {12: 1000.0}}
    cfg = topic_config(tmp_path, "compare.strategies=[finetune_full,lp_ft]", "compare.train_sizes=[12]",
                       "compare.budget=60s", quick_compare("strategy.max_epochs=1"))
    clock = VirtualClock()
    result = run_budgeted_grid(cfg, tmp_path / "out", TimedSteps(clock, table), costs=Costs(table), clock=clock)
    assert {c["cell"]: c["status"] for c in result["plan"]["cells"]} == {"finetune_full-n12-s0": "ran",
                                                                        "lp_ft-n12-s0": "skipped"}
    assert result["extraction_seconds"] == 0.0 and (tmp_path / "out" / "report.md").is_file()


def test_a_grid_where_no_cell_finished_says_so_in_one_line(tmp_path):
    """Every cell failed after its retries: nothing to report, which was a pandas KeyError."""
    with pytest.raises(TransferlabError, match=r"^\S+/runs: none of the 2 cells finished; each run folder's "
                                               r"failures\.jsonl says why$"):
        reported(topic_config(tmp_path), tmp_path / "out", [], ["a-n12-s0", "b-n12-s0"])


@pytest.mark.usefixtures("prefect_api")
def test_a_budgeted_flow_rerun_takes_finished_fine_tunes_from_the_cache(tmp_path, flows):
    """The compare flow rerun in its folder on a budget that buys no fine-tuning: the fine-tune it
    finished before is reported again, its train and evaluate tasks Cached (the rerun gives it the
    max_time it ran under), no probe runs, and its model is the one trained before."""
    cfg = topic_config(tmp_path, "compare.strategies=[linear_probe,finetune_full]", "compare.train_sizes=[12]",
                       quick_compare("strategy.max_epochs=2"))
    out = tmp_path / "out"
    cfg.compare.budget = "1h"
    compare_run(flows, cfg, out)
    weights = (out / "runs" / "finetune_full-n12-s0" / "model.safetensors").read_bytes()
    cfg.compare.budget = "1s"
    result, runs = compare_run(flows, cfg, out)
    cell = next(c for c in result["plan"]["cells"] if c["cell"] == "finetune_full-n12-s0")
    assert (cell["status"], cell["predicted_seconds"]) == ("ran", 0.0)
    states = {(r.name.rsplit("-", 1)[0], r.state.name) for r in runs}
    assert {("train", "Cached"), ("evaluate", "Cached")} <= states and not any(n == "probe cost" for n, _ in states)
    assert (out / "runs" / "finetune_full-n12-s0" / "model.safetensors").read_bytes() == weights
    assert "finetune_full" in set(pd.read_csv(out / "runs.csv")["strategy"])


def test_a_group_gets_at_most_its_share_of_what_is_left():
    assert planner.train_limit(10.0, 12.0, 3, 100.0) == (20, "2x its predicted training time")
    # (45 - 5) / 3 - 2 s of load and evaluation = 11.3: whole seconds, never past the share
    assert planner.train_limit(10.0, 12.0, 3, 45.0) == (11, "its share of what was left of the budget")
    assert planner.train_limit(0.1, 0.1, 1, 100.0)[0] == 1  # max_time's least
    assert planner.max_time(3725) == "00:01:02:05"


def test_the_probed_rate_gives_way_to_what_the_fits_measured(tmp_path):
    """A probe that read 0.05 s per sample-step, then fits that took 0.01 s per sample-step (their
    validations at the probed eval rate and checkpoint writes on top): the next size is predicted at 0.01."""
    cfg = budgeted(tmp_path, "1h")
    tunes = [c for c in grid(cfg) if c.strategy == "finetune_full"]
    costs = ProbedCosts(tunes, Steps())
    probed = planner.StepRate(seconds_per_sample_step=0.05, seconds_per_eval_item=0.002, load_seconds=1.0,
                              checkpoint_seconds=0.5)
    costs.probed["finetune_full"] = probed
    shape = costs.shape("finetune_full", 12)
    for seed in (0, 1):
        validating = shape.validations * (shape.val_rows * probed.seconds_per_eval_item + probed.checkpoint_seconds)
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "fit.json").write_text(json.dumps(
            {"epochs": shape.epochs, "train_seconds": shape.epochs * shape.train_rows * 0.01 + validating}))
    before = costs.predict("finetune_full", 24)
    costs.learn("finetune_full", 12, [tmp_path / "run0", tmp_path / "run1"])
    assert costs.rate("finetune_full").seconds_per_sample_step == pytest.approx(0.01)
    assert costs.predict("finetune_full", 24) == planner.predicted_seconds(costs.rate("finetune_full"),
                                                                          costs.shape("finetune_full", 24))
    assert costs.predict("finetune_full", 24)["train"] < before["train"]
    assert costs.record()["finetune_full"]["seconds_per_sample_step"] == 0.05  # the probe's, kept in plan.json


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h30m", 5400), (120, 120), ("45", 45)])
def test_budget_durations(text, seconds):
    assert planner.budget_seconds(text) == seconds


def test_a_bad_budget_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^compare\.budget='soon': a duration such as 90s"):
        topic_config(tmp_path, "compare.budget=soon")


@pytest.mark.usefixtures("prefect_api")
def test_a_budgeted_compare_flow_reports_what_it_skipped(tmp_path):
    """flows/compare.py with a budget the heads alone use up: every fine-tuning cell is skipped, said
    so in plan.json and the report, and the heads' verdict-free report still comes out."""
    csv = tmp_path / "topics.csv"
    topic_frame().to_csv(csv, index=False)
    proc = subprocess.run(
        [PYTHON, str(ROOT / "flows" / "compare.py"), "data=csv", f"data.path={csv}", "data.label_column=topic",
         *tiny_encoder(), "trainer.enable_progress_bar=false", f"paths.cache_dir={tmp_path / 'cache'}",
         "compare.strategies=[linear_probe,finetune_full]", "compare.train_sizes=[12,all]", "compare.budget=0.5s",
         quick_compare(), f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=tmp_path,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    status = {c["cell"]: c["status"] for c in plan["cells"]}
    assert status == {"linear_probe-n12-s0": "ran", "linear_probe-nall-s0": "ran",
                      "finetune_full-n12-s0": "skipped", "finetune_full-nall-s0": "skipped"}
    report = (tmp_path / "run" / "report.html").read_text()
    assert "id=\"budget\"" in report and "finetune_full-n12-s0" in report
    assert plan["rates"]["finetune_full"]["seconds_per_sample_step"] > 0
    assert plan["rates"]["finetune_full"]["checkpoint_seconds"] > 0  # the probe wrote a validation's checkpoints
