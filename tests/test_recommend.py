"""The verdict on constructed runs with per-item test correctness: selection on validation, paired
intervals that shrink with seeds, ties called ties, and words that never contradict a verdict."""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferlab.report.paired import PairedLead
from transferlab.report.recommend import Verdict, crossover, recommendation, summarize, verdicts
from transferlab.report.render import load_runs
from transferlab.report.tables import seed_table

ITEMS = 400


def correct(accuracy: float, seed: int, shared: np.ndarray) -> list[bool]:
    """Exactly round(accuracy × ITEMS) items right, mostly the ones the other strategy gets right
    (paired items): the constructed accuracies are the measured ones, whatever the seed."""
    own = np.random.default_rng(seed).random(ITEMS)
    order = np.argsort(0.8 * shared + 0.2 * own)
    items = np.zeros(ITEMS, dtype=bool)
    items[order[:round(accuracy * ITEMS)]] = True
    return items.tolist()


def run(strategy: str, kind: str, size: int, seed: int, test: float, val: float, shared: np.ndarray,
        cost: float) -> dict:
    items = correct(test, zlib.crc32(f"{strategy}/{size}/{seed}".encode()), shared)  # hash() varies per process
    return {"strategy": strategy, "kind": kind, "train_size": size, "seed": seed, "test_size": ITEMS,
            "val_size": 50, "test_accuracy": float(np.mean(items)), "val_accuracy": val, "train_accuracy": 1.0,
            "test_macro_f1": 0.0, "train_seconds": cost, "peak_memory_mb": 1.0, "test_correct": items,
            "trainable_params": 1, "total_params": 2}


def grid(table: dict[int, dict[str, float]], seeds: int = 3, val: dict[str, float] | None = None) -> pd.DataFrame:
    """{size: {strategy: test accuracy}} for linear_probe (head) and finetune_full (finetune)."""
    rows = []
    for size, accuracies in table.items():
        for seed in range(seeds):
            shared = np.random.default_rng([size, seed]).random(ITEMS)
            for strategy, acc in accuracies.items():
                kind = "head" if strategy in ("linear_probe", "mlp_head") else "finetune"
                rows.append(run(strategy, kind, size, seed, acc, (val or {}).get(strategy, acc), shared,
                                5.0 if kind == "head" else 400.0))
    return pd.DataFrame(rows)


def test_the_candidate_is_chosen_on_validation_not_on_test():
    """lora is best on test but not on validation: finetune_full is the one judged."""
    runs = grid({200: {"linear_probe": 0.80, "finetune_full": 0.82, "lora": 0.90}},
                val={"linear_probe": 0.8, "finetune_full": 0.85, "lora": 0.83})
    (v,) = verdicts(runs)
    assert v.finetune == "finetune_full" and v.candidates["finetune"] == ["finetune_full", "lora"]
    assert v.transfer == "linear_probe"


def test_the_interval_narrows_with_more_seeds():
    widths = []
    for seeds in (2, 8):
        rows = []
        rng = np.random.default_rng(0)
        for seed in range(seeds):  # seed-to-seed variation of the fine-tune
            shared = np.random.default_rng([7, seed]).random(ITEMS)
            rows.append(run("linear_probe", "head", 100, seed, 0.80, 0.8, shared, 5.0))
            rows.append(run("finetune_full", "finetune", 100, seed, 0.83 + rng.normal(0, 0.03), 0.8, shared, 400.0))
        (v,) = verdicts(pd.DataFrame(rows))
        widths.append(v.paired.high - v.paired.low)
    assert widths[1] < widths[0]


def test_a_lead_inside_the_interval_is_a_tie_and_a_clear_lead_a_win():
    close = verdicts(grid({200: {"linear_probe": 0.850, "finetune_full": 0.855}}))[0]
    assert close.paired.low < 0 < close.paired.high and close.winner == "tie"
    clear = verdicts(grid({200: {"linear_probe": 0.80, "finetune_full": 0.90}}))[0]
    assert clear.paired.low > 0 and clear.winner == "finetune" and clear.paired.p_value < 0.01


def test_a_lead_below_the_tie_margin_is_a_tie_even_when_resolved():
    (v,) = verdicts(grid({200: {"linear_probe": 0.80, "finetune_full": 0.83}}), tie_margin=0.05)
    assert v.paired.low > 0 and v.winner == "tie"


def test_non_monotone_wins_then_a_tie_are_not_called_no_win_anywhere():
    """Fine-tuning wins at 50 and 200, ties at 1000: no crossover, and the text says where it wins."""
    found = verdicts(grid({50: {"linear_probe": 0.70, "finetune_full": 0.85},
                           200: {"linear_probe": 0.80, "finetune_full": 0.90},
                           1000: {"linear_probe": 0.900, "finetune_full": 0.902}}))
    assert [v.winner for v in found] == ["finetune", "finetune", "tie"]
    assert crossover(found) is None
    text = recommendation(found)
    assert text.startswith("50-200 labels: use fine-tune (it wins beyond noise); 1000 labels: use transfer learning")
    assert "does not beat" not in text


def test_one_seed_is_provisional():
    found = verdicts(grid({200: {"linear_probe": 0.80, "finetune_full": 0.90}}, seeds=1))
    assert found[0].provisional and "provisional" in recommendation(found)


def verdict(size: int, winner: str, ratio: float) -> Verdict:
    lead = {"finetune": 0.05, "transfer": -0.05, "tie": 0.001}[winner]
    low, high = (lead - 0.02, lead + 0.02) if winner != "tie" else (-0.02, 0.02)
    paired = PairedLead(lead, low, high, 0.95, 0.01, (0.01,), (10, 2), 3, 1200)
    return Verdict(size, "linear_probe", "finetune_full", {"transfer": ["linear_probe"],
                                                            "finetune": ["finetune_full"]}, paired, 0.005, ratio)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["finetune", "transfer", "tie"]), st.sampled_from([0.5, 40.0])),
                min_size=1, max_size=6))
def test_no_sentence_contradicts_a_verdict(pattern):
    found = [verdict(50 * 2 ** i, w, r) for i, (w, r) in enumerate(pattern)]
    text = recommendation(found)
    advice, _, evidence = text.partition(" Evidence: ")
    clauses = {}
    for clause in advice.rstrip(".").split("; "):
        match = re.match(r"(\d+)(?:-(\d+))? labels: use (fine-tune|transfer learning) \((.*)\)", clause)
        assert match, clause
        lo, hi = int(match[1]), int(match[2] or match[1])
        for v in found:
            if lo <= v.train_size <= hi:
                clauses[v.train_size] = (match[3], match[4])
    for v in found:
        use, why = clauses[v.train_size]  # every size is advised on exactly once
        if v.winner == "finetune":
            assert use == "fine-tune"
        elif v.winner == "transfer":
            assert use == "transfer learning"
        else:
            assert use == ("fine-tune" if v.compute_ratio < 1 else "transfer learning") and "tie" in why
        if "wins beyond noise" in why and "or ties" not in why:
            assert v.winner != "tie"
        said = re.search(rf"with {v.train_size} labels (.*?) \(", evidence)[1]
        assert said.endswith("are tied") == (v.winner == "tie")
        assert said.startswith("finetune_full beats") == (v.winner == "finetune")
    cross = crossover(found)
    assert cross is None or all(v.winner == "finetune" for v in found if v.train_size >= cross)


def test_few_validation_labels_are_said():
    found = verdicts(grid({200: {"linear_probe": 0.80, "finetune_full": 0.90}}))
    assert found[0].val_size == 50 and "chosen on 50 validation labels" in recommendation(found)


def test_runs_from_before_the_cost_ledger_still_get_a_verdict():
    """A report over runs of older code (no val_size, no cost_to_train_seconds) beside new ones."""
    runs = grid({200: {"linear_probe": 0.80, "finetune_full": 0.90}})
    runs["cost_to_train_seconds"] = runs["train_seconds"] + 1.0
    old = runs["seed"] == 0
    runs.loc[old, ["val_size", "cost_to_train_seconds"]] = np.nan
    (v,) = verdicts(runs)
    assert v.val_size == 50 and np.isfinite(v.compute_ratio) and v.compute_ratio > 1


def test_classes_named_like_missing_values_are_scored_as_written(tmp_path):
    """A class named "None" or "NA" (a DataFrame or Parquet keeps such names) is a label, not a
    missing value: the paired lead is scored from predictions.csv as the run's accuracy is."""
    actual = ["None", "NA", "null", "pos"] * 50
    files = []
    for strategy, kind, right in (("linear_probe", "head", 0), ("finetune_full", "finetune", 150)):
        predicted = actual[:right] + ["pos" if a != "pos" else "None" for a in actual[right:]]
        run_dir = tmp_path / strategy
        run_dir.mkdir()
        pd.DataFrame({"text": [f"t{i}" for i in range(len(actual))], "actual": actual,
                      "predicted": predicted}).to_csv(run_dir / "predictions.csv", index=False)
        accuracy = float(np.mean([a == p for a, p in zip(actual, predicted)]))
        (run_dir / "metrics.json").write_text(json.dumps({
            "strategy": strategy, "kind": kind, "train_size": 100, "seed": 0, "test_size": len(actual),
            "val_size": 200, "test_accuracy": accuracy, "val_accuracy": 0.5, "train_accuracy": 1.0,
            "train_seconds": 1.0}))
        files.append(run_dir / "metrics.json")
    runs = load_runs(files)
    assert [np.mean(c) for c in runs["test_correct"]] == list(runs["test_accuracy"])
    (v,) = verdicts(runs)
    assert v.lead == pytest.approx(0.75) and v.winner == "finetune"


def test_a_lead_of_exactly_the_tie_margin_reaches_it():
    """Two seeds of 1000 items leading by 2 and 18 items: a lead of exactly 1 point, resolved, with a
    1-point margin is a win (the mean of 0.002 and 0.018 is 0.009999999999999998 in floats)."""
    rows = []
    for seed, ahead in enumerate((2, 18)):
        transfer = [False] * 1000
        for strategy, kind, items in (("linear_probe", "head", transfer),
                                      ("finetune_full", "finetune", [True] * ahead + transfer[ahead:])):
            rows.append({"strategy": strategy, "kind": kind, "train_size": 200, "seed": seed, "val_size": 500,
                         "test_accuracy": float(np.mean(items)), "val_accuracy": 0.5, "train_accuracy": 1.0,
                         "train_seconds": 1.0, "test_correct": items})
    (v,) = verdicts(pd.DataFrame(rows), tie_margin=0.01)
    assert v.paired.low > 0 and f"{100 * v.lead:.1f}" == "1.0" and v.winner == "finetune"


def test_two_runs_of_one_seed_at_one_size_are_refused_not_scored_as_a_zero_lead():
    """Two train sizes that resolved to the same rows give each strategy two runs per seed there;
    pairing them used to read each run's list as one item and report a lead of exactly 0 (a tie)."""
    runs = grid({1000: {"linear_probe": 0.80, "finetune_full": 0.90}})
    with pytest.raises(ValueError, match="several runs of seed 0 at 1000 training rows"):
        verdicts(pd.concat([runs, runs], ignore_index=True))


def test_the_comparison_table_names_the_size_of_each_strategys_cost():
    """Under a budget the head ran at 1000 labels and the fine-tune only at 50: their costs sit in
    one row, each with its own size, and adaptability stays one row (not one per size with NaN)."""
    runs = grid({50: {"linear_probe": 0.80, "finetune_full": 0.82}, 1000: {"linear_probe": 0.90}})
    table = seed_table(summarize(runs), runs, 0.0)
    cost = table.loc["computational cost at its largest size (cost to train s; peak MB)"]
    assert cost["finetune_full"].startswith("50: 400.0 s") and cost["linear_probe"].startswith("1000: 5.0 s")
    assert table.loc["adaptability at its largest size (test accuracy %; macro-F1 %)"].notna().all()


def test_the_lead_says_whose_it_is():
    """QA: "linear_probe and finetune_full are tied (-3.4 points, ...)" did not say whether -3.4 was
    fine-tuning behind or ahead; the evidence, the per-size table and its note now name the direction."""
    from transferlab.report.render import VERDICT_RULE, per_size_table

    behind = verdict(200, "transfer", 2.0)
    assert "finetune_full beats" not in recommendation([behind])
    assert "(fine-tune lead -5.0 points, 95% CI [-7.0, -3.0]" in recommendation([behind])
    assert per_size_table([behind])["fine-tune lead (points), 95% CI"].tolist() == ["-5.0 [-7.0, -3.0]"]
    assert "minus transfer's" in VERDICT_RULE
