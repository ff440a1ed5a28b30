"""The recommendation logic on constructed metric tables: transfer wins, fine-tuning wins, a tie, a crossover."""

from __future__ import annotations

import pandas as pd

from transferlab.report.recommend import crossover, recommendation, summarize, verdicts


def runs(table: dict[int, tuple[list[float], list[float]]], ft_seconds: float = 400.0) -> pd.DataFrame:
    """{train_size: (linear probe accuracies per seed, full fine-tune accuracies per seed)}."""
    rows = []
    for size, (tl, ft) in table.items():
        for seed, (a, b) in enumerate(zip(tl, ft)):
            base = {"train_size": size, "seed": seed, "train_accuracy": 1.0, "val_accuracy": 0.9,
                    "test_macro_f1": 0.0, "peak_memory_mb": 1.0}
            rows.append({**base, "strategy": "linear_probe", "kind": "head", "test_accuracy": a,
                         "train_seconds": 5.0, "trainable_params": 1925, "total_params": 22_567_301})
            rows.append({**base, "strategy": "finetune_full", "kind": "finetune", "test_accuracy": b,
                         "train_seconds": ft_seconds, "trainable_params": 22_567_301, "total_params": 22_567_301})
    return pd.DataFrame(rows)


def test_bbc_like_ties_recommend_transfer_learning():
    found = verdicts(summarize(runs({50: ([.93, .95, .94], [.92, .95, .93]),
                                     200: ([.96, .97, .965], [.965, .97, .96]),
                                     1000: ([.97, .975, .97], [.975, .97, .98])})), extraction_seconds=5.0)
    assert [v.winner for v in found] == ["tie", "tie", "tie"]
    assert crossover(found) is None
    text = recommendation(found)
    assert text.startswith("Use transfer learning") and "tied" in text and "40x" in text


def test_tweet_like_finetuning_leads_everywhere():
    found = verdicts(summarize(runs({50: ([.55, .56, .55], [.58, .59, .585]),
                                     200: ([.60, .61, .605], [.64, .645, .65]),
                                     1000: ([.64, .645, .64], [.69, .68, .685])})))
    assert [v.winner for v in found] == ["finetune"] * 3
    assert crossover(found) == 50
    assert recommendation(found).startswith("Fine-tune: finetune_full leads at every measured size")
    assert abs(found[-1].lead - 0.0433) < 1e-3


def test_crossover_where_finetuning_overtakes():
    found = verdicts(summarize(runs({50: ([.80, .81, .80], [.70, .72, .71]),
                                     200: ([.85, .86, .85], [.85, .86, .86]),
                                     1000: ([.87, .87, .88], [.91, .92, .915])})))
    assert [v.winner for v in found] == ["transfer", "tie", "finetune"]
    assert crossover(found) == 1000
    assert recommendation(found).startswith("Up to 200 labels use transfer learning; from 1000 labels on")


def test_a_lead_inside_the_seeds_spread_is_a_tie_not_a_win():
    noisy = verdicts(summarize(runs({200: ([.80, .90, .85], [.83, .93, .88])})))[0]
    steady = verdicts(summarize(runs({200: ([.850, .851, .849], [.880, .881, .879])})))[0]
    assert abs(noisy.lead - steady.lead) < 1e-9  # the same 3-point lead...
    assert noisy.winner == "tie" and steady.winner == "finetune"  # ...is noise in one, real in the other


def test_one_seed_a_lead_inside_the_test_sets_sampling_error_is_a_tie():
    """BBC with one seed: 96.0 vs 96.9 on 445 test articles is 4 articles, inside the sampling error."""
    table = runs({200: ([.960], [.969])})
    assert verdicts(summarize(table))[0].winner == "finetune"  # no test size known: only tie_margin
    small, large = (verdicts(summarize(table.assign(test_size=n)))[0] for n in (445, 100_000))
    assert small.winner == "tie" and abs(small.noise - 0.0124) < 1e-3
    assert large.winner == "finetune"  # the same lead on a large test set is real
