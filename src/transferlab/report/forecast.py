"""Learning-curve forecast: where fine-tuning would overtake transfer learning beyond the measured sizes.

Per strategy, accuracy(n) = a - b * n**(-c) (a saturating power law: `a` is the accuracy with
unlimited labels, `b` how far below it the curve starts, `c` how fast it closes the gap) is fitted
to one point per run, and bootstrap refits give bands. When no crossover was measured, the two
curves are extrapolated (the report draws them to 4x the largest size) and the first size where
fine-tuning's curve exceeds transfer's is the forecast, with a band over paired bootstrap draws.

A forecast is an extrapolation of three parameters, so it is only stated when the bootstrap agrees
with it (see `forecast_crossover` for the rule); otherwise the report says it is too uncertain.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

# Three parameters on three sizes fit exactly: nothing would be left to judge the fit by.
MIN_SIZES = 4
# Parameter bounds: accuracy lives in [0, 1]; b >= 0 makes the curve rise with n; 0 < c <= 3 keeps
# the curve from being a step (large c) or a line in log n that never saturates (c -> 0).
A_BOUNDS = (0.0, 1.0)
C_BOUNDS = (0.01, 3.0)
# Forecast grid: log-spaced points in (start, stop] (adjacent points 0.35 % apart at 4x).
GRID_POINTS = 400
# A forecast needs at least this many paired bootstrap draws to judge its band by.
MIN_DRAWS = 20
# A crossover band wider than this factor (high / low) is too wide to state as a forecast.
MAX_BAND_RATIO = 2.0


def saturating_power_law(n, a, b, c):
    """a - b * n**(-c): rises with n (b >= 0) towards the asymptote a."""
    return a - b * np.power(np.asarray(n, dtype=float), -c)


def _predict_draws(draws: np.ndarray, n) -> np.ndarray:
    """Predictions of every draw at every n: shape (k, *shape(n))."""
    n = np.asarray(n, dtype=float)
    a, b, c = (draws[:, i].reshape((-1,) + (1,) * n.ndim) for i in range(3))
    return a - b * np.power(n, -c)


def _quantiles(level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return (1.0 - level) / 2.0, (1.0 + level) / 2.0


@dataclass(frozen=True)
class Curve:
    """A fitted learning curve and its bootstrap draws (the draws carry its uncertainty)."""

    a: float
    b: float
    c: float
    sizes: tuple[int, ...]  # distinct measured sizes, ascending
    draws: np.ndarray  # (k, 3) bootstrap parameter draws (a, b, c) that converged

    def predict(self, n) -> np.ndarray:
        """The fitted curve at n (scalar or array; same shape back)."""
        return saturating_power_law(n, self.a, self.b, self.c)

    def band(self, n, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """Central `level` percentile band of the draws' predictions at n (NaN when no draw converged)."""
        lo_q, hi_q = _quantiles(level)
        n = np.asarray(n, dtype=float)
        if len(self.draws) == 0:
            nan = np.full(n.shape, np.nan)
            return nan, nan.copy()
        preds = _predict_draws(self.draws, n)
        return np.quantile(preds, lo_q, axis=0), np.quantile(preds, hi_q, axis=0)


def _jacobian(n, a, b, c):
    """d(a - b * n**-c) / d(a, b, c): analytic, so curve_fit need not difference numerically."""
    n = np.asarray(n, dtype=float)
    power = np.power(n, -c)
    return np.column_stack([np.ones_like(n), -power, b * power * np.log(n)])


def _initial_guess(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(a, B, c) for y = a - B * x**(-c): for each c on a grid the model is linear in (a, B),
    so least squares gives them exactly; the best c starts the nonlinear fit near the optimum."""
    best, best_sse = None, np.inf
    for c in np.linspace(C_BOUNDS[0], C_BOUNDS[1], 60):
        design = np.column_stack([np.ones_like(x), -np.power(x, -c)])
        (a, big_b), *_ = np.linalg.lstsq(design, y, rcond=None)
        a = float(np.clip(a, A_BOUNDS[0], A_BOUNDS[1]))
        big_b = max(float(big_b), 0.0)
        sse = float(np.sum((y - a + big_b * np.power(x, -c)) ** 2))
        if sse < best_sse:
            best, best_sse = np.array([a, big_b, c]), sse
    return best


def _fit(x: np.ndarray, y: np.ndarray, p0: np.ndarray) -> np.ndarray | None:
    """(a, B, c) on scaled sizes x, or None when curve_fit fails or returns non-finite values."""
    lower = np.array([A_BOUNDS[0], 0.0, C_BOUNDS[0]])
    upper = np.array([A_BOUNDS[1], np.inf, C_BOUNDS[1]])
    # trf wants a strictly feasible start; nudge a guess that sits on a bound inside it.
    p0 = np.clip(p0, lower + 1e-9, np.where(np.isfinite(upper), upper - 1e-9, np.inf))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # no covariance needed: the bootstrap gives bands
            params, _ = curve_fit(saturating_power_law, x, y, p0=p0, bounds=(lower, upper), jac=_jacobian,
                                  method="trf", max_nfev=2000, ftol=1e-10, xtol=1e-10, gtol=1e-10)
    except (RuntimeError, ValueError, np.linalg.LinAlgError):
        return None
    return params if np.all(np.isfinite(params)) else None


def fit_curve(sizes: Sequence[float], accuracies: Sequence[float], resamples: int = 200,
              seed: int = 0) -> Curve | None:
    """Fit accuracy(n) = a - b * n**(-c) to one point per run (several seeds per size allowed).

    None when there are fewer than MIN_SIZES distinct sizes or the fit on all points fails.

    Bootstrap (`resamples` refits, seeded): a residual bootstrap. Every run keeps its size (so
    every size stays present, with its number of runs) and gets the fitted value plus a residual
    drawn with replacement from all runs' residuals (rescaled by sqrt(N / (N - 3)) for the fitted
    parameters); draws whose refit fails are dropped. Resampling runs within each size instead
    was tried and rejected: with the usual 3 seeds a size has only 10 distinct resamples and
    sizes with one run have none, so its bands were too narrow (on synthetic curves with 3 seeds
    per size, its 80 % bands held the true value 63-67 % of the time; pooled residuals: 72-80 %).
    Pooling assumes the seeds' spread is similar at every size; where it shrinks with n, the
    large sizes get wider bands than their own spread, i.e. the extrapolation errs wide.

    Sizes are scaled by their geometric mean before fitting (b * n**-c is then O(1) whatever c is,
    which keeps the problem well conditioned); b is reported on the original scale.
    """
    n = np.asarray(sizes, dtype=float).ravel()
    y = np.asarray(accuracies, dtype=float).ravel()
    if n.shape != y.shape:
        raise ValueError(f"{len(n)} sizes but {len(y)} accuracies")
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(y))):
        raise ValueError("sizes and accuracies must be finite")
    if np.any(n <= 0):
        raise ValueError("sizes must be positive")
    distinct = np.unique(n)
    if len(distinct) < MIN_SIZES:
        return None

    n0 = float(np.exp(np.mean(np.log(distinct))))
    x = n / n0
    params = _fit(x, y, _initial_guess(x, y))
    if params is None:
        return None

    rng = np.random.default_rng(seed)
    fitted = saturating_power_law(x, *params)
    residuals = (y - fitted) * np.sqrt(len(y) / (len(y) - 3))  # undo the shrinkage of fitting 3 parameters
    kept = []
    for _ in range(resamples):
        draw = _fit(x, fitted + rng.choice(residuals, size=len(y), replace=True), params)
        if draw is not None:
            kept.append(draw)
    draws = np.array(kept, dtype=float).reshape(-1, 3)
    draws[:, 1] *= np.power(n0, draws[:, 2])  # B * (n / n0)**-c == (B * n0**c) * n**-c

    a, big_b, c = (float(p) for p in params)
    return Curve(a=a, b=big_b * n0 ** c, c=c, sizes=tuple(int(round(s)) for s in distinct), draws=draws)


@dataclass(frozen=True)
class Crossover:
    """A forecast crossover size, its band over bootstrap draws, and whether it can be stated."""

    size: float | None  # forecast n where finetune's curve first exceeds transfer's; None if not in range
    low: float | None  # band of the crossover size over paired draws; None if not determinable
    high: float | None
    share: float  # fraction of paired draws that cross within (start, stop]
    uncertain: bool  # the fit cannot support a statement either way (rule: forecast_crossover)
    level: float = 0.8  # the band's level (for the sentence)


def _first_crossing(diff: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Per row of diff (finetune - transfer on grid, grid[0] == start): the first n in (start, stop]
    where diff > 0, interpolated linearly in log n between grid points; start when diff is already
    positive at start (fine-tuning is ahead from the outset); inf when it never is."""
    diff = np.atleast_2d(diff)
    ahead = diff[:, 1:] > 0
    crosses = ahead.any(axis=1)
    j = np.argmax(ahead, axis=1) + 1  # grid index of the first point ahead
    rows = np.arange(len(diff))
    d0, d1 = diff[rows, j - 1], diff[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d0 < 0, d0 / (d0 - d1), 0.0)  # d0 == 0 or d0 > 0 (only at start): the left point
    sizes = grid[j - 1] * np.power(grid[j] / grid[j - 1], np.clip(t, 0.0, 1.0))
    return np.where(crosses, sizes, np.inf)


def forecast_crossover(transfer: Curve, finetune: Curve, start: float, stop: float,
                       level: float = 0.8) -> Crossover:
    """Forecast where fine-tuning's curve first exceeds transfer's in (start, stop].

    The fitted curves give `size`. For the band, bootstrap draws are paired index-wise (truncated
    to the shorter list; the two strategies' runs are independent, so any pairing is a valid
    joint draw) and each pair's first crossing is found on the same log grid; a pair that does
    not cross by `stop` counts as crossing beyond it (+inf), so the band's ends are quantiles
    over all pairs and an end that falls beyond `stop` is not determinable (None). A pair (or the
    fit) with fine-tuning already ahead at `start` crosses at `start`: the forecast is meant for
    when no crossover was measured, and such a pair says it is due at once.

    Rule for `uncertain` (False only when the bootstrap backs the statement made):
    - fewer than MIN_DRAWS (20) paired draws -> uncertain;
    - the fit crosses (size is not None): certain only if the whole band lies in range (high is
      not None, i.e. at least (1 + level) / 2 = 90 % of pairs cross by stop) and it spans at
      most MAX_BAND_RATIO (high / low <= 2);
    - the fit does not cross (size is None): certain only if the band lies wholly beyond stop
      (low is None, i.e. fewer than (1 - level) / 2 = 10 % of pairs cross by stop).
    """
    if not 0.0 < start < stop:
        raise ValueError(f"need 0 < start < stop, got start={start}, stop={stop}")
    lo_q, hi_q = _quantiles(level)
    grid = np.geomspace(start, stop, GRID_POINTS + 1)  # grid[0] is start; the search is over grid[1:]

    point = _first_crossing(finetune.predict(grid) - transfer.predict(grid), grid)[0]
    size = float(point) if np.isfinite(point) else None

    k = min(len(transfer.draws), len(finetune.draws))
    if k == 0:
        return Crossover(size=size, low=None, high=None, share=0.0, uncertain=True, level=level)
    diff = _predict_draws(finetune.draws[:k], grid) - _predict_draws(transfer.draws[:k], grid)
    crossings = _first_crossing(diff, grid)
    share = float(np.mean(np.isfinite(crossings)))
    # inverted_cdf picks an actual draw's value: no interpolation towards +inf.
    low_v, high_v = (float(np.quantile(crossings, q, method="inverted_cdf")) for q in (lo_q, hi_q))
    low = low_v if np.isfinite(low_v) else None
    high = high_v if np.isfinite(high_v) else None

    if k < MIN_DRAWS:
        uncertain = True
    elif size is not None:
        uncertain = high is None or low is None or high / low > MAX_BAND_RATIO
    else:
        uncertain = low is not None
    return Crossover(size=size, low=low, high=high, share=share, uncertain=uncertain, level=level)


def _labels(n: float) -> str:
    """A label count to two significant figures (a forecast is no more precise than that)."""
    return f"{float(f'{n:.2g}'):.0f}"


def describe(crossover: Crossover, start: float, stop: float) -> str:
    """The forecast as one sentence for the report (numbers rounded to two significant figures)."""
    if crossover.uncertain:
        return (f"the fit is too uncertain to forecast a crossover between {_labels(start)} and "
                f"{_labels(stop)} labels ({crossover.share * 100:.0f} % of bootstrap fits cross in that range)")
    if crossover.size is None:
        return f"no crossover is forecast up to {_labels(stop)} labels"
    band = ""
    if crossover.low is not None and crossover.high is not None:
        band = f" ({crossover.level * 100:.0f} % band [{_labels(crossover.low)}, {_labels(crossover.high)}])"
    return f"fine-tuning is predicted to overtake at ~{_labels(crossover.size)} labels{band}"
