"""The learning-curve forecast on synthetic curves whose parameters and crossing are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from transferlab.report.forecast import (
    MIN_SIZES,
    Crossover,
    Curve,
    describe,
    fit_curve,
    forecast_crossover,
    saturating_power_law,
)

SIZES = [50, 100, 200, 400, 1000]
START, STOP = 1000, 4000  # the largest measured size, and the report's 4x
# transfer saturates early and low; fine-tuning starts lower, climbs slower, towards a higher asymptote
TRANSFER = (0.80, 1.5, 0.6)
FINETUNE = (0.95, 2.38, 0.35)
NEVER = (0.70, 2.38, 0.35)  # below TRANSFER everywhere in range


def runs(params, noise: float, seed: int, seeds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """`seeds` runs per size: the true curve plus Gaussian noise of sd `noise`."""
    n = np.repeat(SIZES, seeds)
    return n, saturating_power_law(n, *params) + np.random.default_rng(seed).normal(0.0, noise, len(n))


def true_crossing(transfer, finetune) -> float:
    return brentq(lambda n: saturating_power_law(n, *finetune) - saturating_power_law(n, *transfer), START, STOP)


def exact(params) -> Curve:
    """A curve whose every bootstrap draw is the truth: the band collapses onto the fit."""
    return Curve(*params, sizes=tuple(SIZES), draws=np.tile(params, (50, 1)))


@pytest.fixture(scope="module")
def transfer_curve() -> Curve:
    return fit_curve(*runs(TRANSFER, 0.002, seed=12))


@pytest.mark.parametrize("params", [(0.9, 2.0, 0.5), (0.85, 5.0, 0.8), (0.6, 0.4, 0.25)])
def test_noise_free_points_recover_the_parameters_and_extrapolate(params):
    a, b, c = params
    curve = fit_curve(SIZES, [saturating_power_law(n, *params) for n in SIZES], resamples=20)
    assert curve is not None
    assert abs(curve.a - a) < 1e-3
    assert curve.b == pytest.approx(b, rel=0.02)
    assert curve.c == pytest.approx(c, rel=0.02)
    assert curve.sizes == tuple(SIZES)
    beyond = np.array([2000.0, 4000.0])
    predicted = curve.predict(beyond)
    assert predicted.shape == (2,)
    np.testing.assert_allclose(predicted, saturating_power_law(beyond, *params), atol=1e-4)
    # one run per size and no noise: residuals are ~0, so the draws and the band collapse on the fit
    assert curve.draws.shape == (20, 3)
    low, high = curve.band(4000.0)
    assert high - low < 1e-6


def test_band_at_4x_contains_the_truth_and_widens_beyond_the_measured_range():
    params = (0.9, 2.0, 0.5)
    curve = fit_curve(*runs(params, 0.003, seed=1))
    assert curve is not None and curve.draws.shape[1] == 3 and len(curve.draws) >= 190
    low, high = curve.band([200.0, 1000.0, 4000.0])
    assert low[2] <= saturating_power_law(4000.0, *params) <= high[2]
    width = high - low
    assert width[2] > width[1] and width[2] > width[0]
    assert np.all(low <= curve.predict([200.0, 1000.0, 4000.0]))
    assert np.all(curve.predict([200.0, 1000.0, 4000.0]) <= high)
    # a wider level gives a wider band
    low95, high95 = curve.band(4000.0, level=0.95)
    assert high95 - low95 > width[2]


def test_fewer_than_four_distinct_sizes_give_no_fit_however_many_seeds():
    n = np.repeat([50, 100, 200], 10)
    y = saturating_power_law(n, 0.9, 2.0, 0.5)
    assert MIN_SIZES == 4
    assert fit_curve(n, y) is None
    n4 = np.repeat([50, 100, 200, 400], 2)
    assert fit_curve(n4, saturating_power_law(n4, 0.9, 2.0, 0.5), resamples=5) is not None


def test_bad_inputs_are_refused_and_the_bootstrap_is_seeded():
    with pytest.raises(ValueError):
        fit_curve([50, 100, 200, 400], [0.5, 0.6, 0.7])
    with pytest.raises(ValueError):
        fit_curve([0, 100, 200, 400], [0.5, 0.6, 0.7, 0.8])
    with pytest.raises(ValueError):
        fit_curve([50, 100, 200, 400], [0.5, np.nan, 0.7, 0.8])
    n, y = runs((0.9, 2.0, 0.5), 0.01, seed=3, seeds=2)
    first, again = fit_curve(n, y, resamples=10, seed=7), fit_curve(n, y, resamples=10, seed=7)
    np.testing.assert_array_equal(first.draws, again.draws)
    assert not np.array_equal(first.draws, fit_curve(n, y, resamples=10, seed=8).draws)


def test_exact_curves_cross_where_they_truly_do():
    truth = true_crossing(TRANSFER, FINETUNE)
    assert START < truth < STOP  # beyond the measured range, inside the forecast's
    found = forecast_crossover(exact(TRANSFER), exact(FINETUNE), START, STOP)
    assert found.size == pytest.approx(truth, rel=1e-3)
    assert found.low == pytest.approx(truth, rel=1e-3) and found.high == pytest.approx(truth, rel=1e-3)
    assert found.share == 1.0 and not found.uncertain
    # fine-tuning already ahead at the start: the crossover is the start itself
    ahead = forecast_crossover(exact(NEVER), exact(TRANSFER), START, STOP)
    assert ahead.size == START and not ahead.uncertain


def test_noisy_fits_forecast_the_crossing_within_ten_percent_and_the_band_holds_it(transfer_curve):
    truth = true_crossing(TRANSFER, FINETUNE)
    finetune = fit_curve(*runs(FINETUNE, 0.002, seed=13))
    found = forecast_crossover(transfer_curve, finetune, START, STOP)
    assert found.size == pytest.approx(truth, rel=0.10)
    assert found.low <= truth <= found.high
    assert found.low <= found.size <= found.high
    assert found.share >= 0.9 and not found.uncertain
    sentence = describe(found, START, STOP)
    assert sentence.startswith("fine-tuning is predicted to overtake at ~")
    assert f"~{float(f'{found.size:.2g}'):.0f} labels" in sentence
    assert f"80 % band [{float(f'{found.low:.2g}'):.0f}, {float(f'{found.high:.2g}'):.0f}]" in sentence


def test_curves_that_never_cross_in_range_forecast_none(transfer_curve):
    below = fit_curve(*runs(NEVER, 0.002, seed=13))
    found = forecast_crossover(transfer_curve, below, START, STOP)
    assert found.size is None and found.low is None and found.high is None
    assert found.share < 0.1 and not found.uncertain
    assert describe(found, START, STOP) == "no crossover is forecast up to 4000 labels"


def test_very_noisy_data_is_too_uncertain_to_forecast():
    transfer = fit_curve(*runs(TRANSFER, 0.05, seed=20), resamples=100)
    finetune = fit_curve(*runs(FINETUNE, 0.05, seed=21), resamples=100)
    found = forecast_crossover(transfer, finetune, START, STOP)
    assert found.uncertain
    sentence = describe(found, START, STOP)
    assert sentence.startswith("the fit is too uncertain to forecast a crossover")
    assert "1000" in sentence and "4000" in sentence and f"{found.share * 100:.0f} %" in sentence


def with_draws(params, draws) -> Curve:
    return Curve(*params, sizes=tuple(SIZES), draws=np.asarray(draws, dtype=float))


def mixed(crossing: int, never: int) -> np.ndarray:
    """Draws of which `crossing` follow FINETUNE (crossing TRANSFER at ~2030) and `never` follow NEVER."""
    return np.array([FINETUNE] * crossing + [NEVER] * never)


def test_the_uncertain_rule_on_built_draws():
    transfer = with_draws(TRANSFER, np.tile(TRANSFER, (100, 1)))
    # the fit crosses; 80 % of the draws do: the band's upper end is beyond STOP -> uncertain
    found = forecast_crossover(transfer, with_draws(FINETUNE, mixed(80, 20)), START, STOP)
    assert found.size is not None and found.high is None and found.share == pytest.approx(0.8)
    assert found.uncertain
    # 95 % cross at the same place: certain
    found = forecast_crossover(transfer, with_draws(FINETUNE, mixed(95, 5)), START, STOP)
    assert found.high == pytest.approx(found.size) and not found.uncertain
    # every draw crosses, but spread over ~1150..3150 (band wider than 2x) -> uncertain
    spread = [(a, 2.38, 0.35) for a in np.linspace(0.93, 0.98, 100)]
    found = forecast_crossover(transfer, with_draws(FINETUNE, spread), START, STOP)
    assert found.share == 1.0 and found.high / found.low > 2 and found.uncertain
    narrow = [(a, 2.38, 0.35) for a in np.linspace(0.945, 0.955, 100)]
    found = forecast_crossover(transfer, with_draws(FINETUNE, narrow), START, STOP)
    assert found.high / found.low < 1.5 and found.low <= found.size <= found.high and not found.uncertain
    # the fit does not cross; half the draws do -> uncertain, not "no crossover"
    found = forecast_crossover(transfer, with_draws(NEVER, mixed(50, 50)), START, STOP)
    assert found.size is None and found.share == pytest.approx(0.5) and found.uncertain
    # 5 % of the draws cross: the whole band is beyond STOP -> a confident "no crossover"
    found = forecast_crossover(transfer, with_draws(NEVER, mixed(5, 95)), START, STOP)
    assert found.size is None and found.low is None and not found.uncertain
    # draws are paired index-wise, truncated to the shorter list
    found = forecast_crossover(with_draws(TRANSFER, np.tile(TRANSFER, (60, 1))),
                               with_draws(FINETUNE, mixed(60, 40)), START, STOP)
    assert found.share == 1.0 and not found.uncertain


def test_too_few_draws_are_uncertain():
    bare = Curve(*TRANSFER, sizes=tuple(SIZES), draws=np.empty((0, 3)))
    found = forecast_crossover(bare, exact(FINETUNE), START, STOP)
    assert found.size == pytest.approx(true_crossing(TRANSFER, FINETUNE), rel=1e-3)
    assert found.uncertain and found.share == 0.0 and found.low is None
    low, high = bare.band(2000.0)
    assert np.isnan(low) and np.isnan(high)
    few = Curve(*TRANSFER, sizes=tuple(SIZES), draws=np.tile(TRANSFER, (5, 1)))
    assert forecast_crossover(few, exact(FINETUNE), START, STOP).uncertain


def test_describe_states_the_numbers():
    crossing = Crossover(size=2034.0, low=1812.0, high=2349.0, share=0.97, uncertain=False)
    assert describe(crossing, 1000, 4000) == \
        "fine-tuning is predicted to overtake at ~2000 labels (80 % band [1800, 2300])"
    assert describe(Crossover(None, None, None, 0.02, False), 1000, 4000) == \
        "no crossover is forecast up to 4000 labels"
    assert describe(Crossover(1500.0, 1100.0, None, 0.6, True), 1000, 4000) == (
        "the fit is too uncertain to forecast a crossover between 1000 and 4000 labels "
        "(60 % of bootstrap fits cross in that range)")
    with pytest.raises(ValueError):
        forecast_crossover(exact(TRANSFER), exact(FINETUNE), 4000, 1000)
