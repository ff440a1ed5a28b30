"""The paired lead interval and McNemar's exact test behave as the statistics say they should."""

from __future__ import annotations

import time
from math import comb

import numpy as np
import pytest
from scipy.stats import binomtest

from transferlab.report.paired import PairedLead, mcnemar_exact, paired_lead


def _paired(rng: np.random.Generator, n: int, p_ft: float, p_tl: float, rho: float = 0.6):
    """Correlated correctness of two runs on the same n items, with exact marginals p_ft and p_tl.

    Each item has a latent difficulty u; the transfer run sees the same u with probability rho
    (shared latent), an independent one otherwise. So the true lead is exactly p_ft - p_tl.
    """
    u = rng.random(n)
    v = np.where(rng.random(n) < rho, u, rng.random(n))
    return u < p_ft, v < p_tl


def _table(b: int, c: int, both: int, neither: int):
    """Hand-made paired outcomes with known discordant counts, in a shuffled order."""
    ft = np.array([True] * b + [False] * c + [True] * both + [False] * neither)
    tl = np.array([False] * b + [True] * c + [True] * both + [False] * neither)
    order = np.random.default_rng(1).permutation(ft.size)
    return ft[order], tl[order]


def _width(result: PairedLead) -> float:
    return result.high - result.low


def test_identical_runs_have_no_lead():
    rng = np.random.default_rng(0)
    runs = [rng.random(300) < 0.7 for _ in range(3)]
    result = paired_lead(runs, [r.copy() for r in runs])
    assert result.lead == 0.0
    assert (result.low, result.high) == (0.0, 0.0)
    assert result.p_value == 1.0
    assert result.per_seed_p == (1.0, 1.0, 1.0)
    assert result.discordant == (0, 0)
    assert not result.excludes_zero()
    assert (result.seeds, result.items, result.level) == (3, 900, 0.95)


def test_mcnemar_matches_binomtest_and_counts_discordant_pairs():
    ft, tl = _table(b=10, c=2, both=50, neither=8)
    p, b, c = mcnemar_exact(ft, tl)
    assert (b, c) == (10, 2)
    assert p == pytest.approx(binomtest(10, 12, 0.5).pvalue)
    # by hand: 2 * P(X <= 2), X ~ Binomial(12, 1/2)
    assert p == pytest.approx(2 * sum(comb(12, k) for k in range(3)) / 2**12)
    # swapping the roles swaps b and c and keeps the two-sided p
    p_swapped, b_swapped, c_swapped = mcnemar_exact(tl, ft)
    assert (b_swapped, c_swapped) == (2, 10)
    assert p_swapped == pytest.approx(p)
    # 0/1 integers are accepted as correctness
    assert mcnemar_exact(ft.astype(int), tl.astype(int)) == (p, b, c)
    # no discordant pairs: nothing to test
    assert mcnemar_exact(ft, ft) == (1.0, 0, 0)


def test_pooled_and_per_seed_mcnemar():
    tables = [_table(10, 2, 50, 8), _table(3, 5, 40, 2), _table(7, 1, 20, 0)]
    result = paired_lead([t[0] for t in tables], [t[1] for t in tables], resamples=500)
    assert result.discordant == (20, 8)
    assert result.p_value == pytest.approx(binomtest(20, 28, 0.5).pvalue)
    expected = tuple(binomtest(b, b + c, 0.5).pvalue for b, c in [(10, 2), (3, 5), (7, 1)])
    assert result.per_seed_p == pytest.approx(expected)


def test_large_consistent_lead_is_resolved_small_lead_on_few_items_is_not():
    rng = np.random.default_rng(2)
    big = [_paired(rng, 2000, 0.9, 0.7) for _ in range(3)]
    result = paired_lead([b[0] for b in big], [b[1] for b in big])
    assert result.excludes_zero()
    assert result.low > 0.1
    assert result.p_value < 1e-6

    ft, tl = _table(b=3, c=2, both=20, neither=5)
    small = paired_lead([ft], [tl])
    assert small.lead == pytest.approx(1 / 30)
    assert small.low < 0.0 < small.high
    assert not small.excludes_zero()
    assert small.p_value > 0.5


def test_negative_lead_is_resolved_below_zero():
    rng = np.random.default_rng(3)
    ft, tl = _paired(rng, 3000, 0.6, 0.8)
    result = paired_lead([ft], [tl])
    assert result.high < 0.0
    assert result.excludes_zero()
    assert result.discordant[0] < result.discordant[1]


def test_lead_is_mean_of_per_seed_accuracy_differences_and_interval_contains_it():
    rng = np.random.default_rng(4)
    sizes = [150, 900, 400]  # unequal lengths: mean of per-seed leads != pooled item mean
    pairs = [_paired(rng, n, p, 0.7) for n, p in zip(sizes, [0.9, 0.72, 0.8])]
    ft, tl = [p[0] for p in pairs], [p[1] for p in pairs]
    result = paired_lead(ft, tl)
    per_seed = [f.mean() - t.mean() for f, t in zip(ft, tl)]
    assert result.lead == pytest.approx(np.mean(per_seed))
    assert result.lead != pytest.approx(np.concatenate(ft).mean() - np.concatenate(tl).mean())
    assert result.low <= result.lead <= result.high
    assert result.items == sum(sizes)
    assert result.seeds == 3

    one = paired_lead([ft[1]], [tl[1]])
    assert one.lead == pytest.approx(per_seed[1])
    assert one.low <= one.lead <= one.high
    assert one.seeds == 1 and one.items == 900


def test_deterministic_for_a_seed_and_level_widens_the_interval():
    rng = np.random.default_rng(5)
    ft, tl = _paired(rng, 500, 0.8, 0.75)
    assert paired_lead([ft], [tl], seed=7) == paired_lead([ft], [tl], seed=7)
    narrow = paired_lead([ft], [tl], level=0.8)
    wide = paired_lead([ft], [tl], level=0.99)
    assert wide.low < narrow.low and narrow.high < wide.high


def test_items_only_interval_matches_the_normal_approximation():
    # one seed: the bootstrap spread of a mean difference is sd(d) / sqrt(n)
    rng = np.random.default_rng(6)
    ft, tl = _paired(rng, 4000, 0.8, 0.75)
    d = ft.astype(int) - tl.astype(int)
    se = d.std() / np.sqrt(d.size)
    result = paired_lead([ft], [tl])
    assert _width(result) == pytest.approx(2 * 1.959964 * se, rel=0.05)


def _seed_varying(rng: np.random.Generator, seeds: int, items: int, spread: float):
    """Runs whose true lead differs from seed to seed: lead_s ~ Uniform(0.05 +- spread)."""
    ft, tl = [], []
    for _ in range(seeds):
        lead = 0.05 + rng.uniform(-spread, spread)
        f, t = _paired(rng, items, 0.7 + lead / 2, 0.7 - lead / 2)
        ft.append(f)
        tl.append(t)
    return ft, tl


def test_more_seeds_give_a_narrower_interval_when_seeds_vary():
    # 3 vs 12 seeds rather than 2 vs 8: with 2 seeds the two-stage percentile interval is roughly the
    # range of the two seed leads, whose size is so variable that the comparison needs many more runs
    rng = np.random.default_rng(7)
    widths = {3: [], 12: []}
    for _ in range(20):
        for k in widths:
            ft, tl = _seed_varying(rng, k, 300, spread=0.2)
            widths[k].append(_width(paired_lead(ft, tl, resamples=1000)))
    assert np.mean(widths[12]) < 0.85 * np.mean(widths[3])


def test_two_stage_is_wider_than_items_only_when_seeds_disagree():
    rng = np.random.default_rng(8)
    leads = [0.3, -0.2, 0.15, -0.1]
    pairs = [_paired(rng, 1000, 0.7 + lead / 2, 0.7 - lead / 2) for lead in leads]
    ft, tl = [p[0] for p in pairs], [p[1] for p in pairs]
    two_stage = paired_lead(ft, tl)
    # equal lengths: pooling the seeds into one gives the same lead, with items-only resampling
    items_only = paired_lead([np.concatenate(ft)], [np.concatenate(tl)])
    assert two_stage.lead == pytest.approx(items_only.lead)
    assert _width(two_stage) > 3 * _width(items_only)
    assert not two_stage.excludes_zero()


def test_coverage_of_the_true_lead():
    rng = np.random.default_rng(9)
    true_lead = 0.8 - 0.75
    covered = 0
    trials = 200
    for i in range(trials):
        ft, tl = _paired(rng, 400, 0.8, 0.75)
        result = paired_lead([ft], [tl], resamples=2000, seed=i)
        covered += result.low <= true_lead <= result.high
    assert 0.88 <= covered / trials <= 0.99


def test_speed_of_ten_thousand_resamples():
    rng = np.random.default_rng(10)
    pairs = [_paired(rng, 2000, 0.8, 0.75) for _ in range(3)]
    ft, tl = [p[0] for p in pairs], [p[1] for p in pairs]
    paired_lead(ft, tl, resamples=100)  # warm-up (imports, first-call overhead)
    start = time.perf_counter()
    paired_lead(ft, tl, resamples=10_000)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "finetune, transfer",
    [
        ([], []),
        ([np.ones(5, bool)], []),
        ([np.ones(5, bool), np.ones(5, bool)], [np.ones(5, bool)]),
        ([np.ones(5, bool)], [np.ones(4, bool)]),
        ([np.ones(0, bool)], [np.ones(0, bool)]),
        ([np.ones(5, bool), np.ones(0, bool)], [np.ones(5, bool), np.ones(0, bool)]),
        ([np.ones((2, 3), bool)], [np.ones((2, 3), bool)]),
        ([np.array([0, 1, 2])], [np.array([0, 1, 1])]),
    ],
)
def test_bad_input_raises(finetune, transfer):
    with pytest.raises(ValueError) as excinfo:
        paired_lead(finetune, transfer)
    assert "\n" not in str(excinfo.value)


def test_bad_options_and_mcnemar_lengths_raise():
    ft = np.ones(5, bool)
    with pytest.raises(ValueError):
        paired_lead([ft], [ft], level=1.0)
    with pytest.raises(ValueError):
        paired_lead([ft], [ft], resamples=0)
    with pytest.raises(ValueError):
        mcnemar_exact(ft, np.ones(4, bool))
