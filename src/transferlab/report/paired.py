"""Paired comparison of the best fine-tune run against the best transfer run on the same test items.

Both strategies are scored on the *same* test items, so their errors are correlated; comparing two
independent accuracy intervals would overstate the noise. This module keeps the pairing:

* a paired bootstrap interval for the lead (fine-tune accuracy minus transfer accuracy), two-stage
  (training seeds, then test items within each seed) when there are several seeds, items only when
  there is one -- so with a single seed the interval reflects test-set sampling alone and says
  nothing about training-seed variance (``PairedLead.seeds`` lets the report say so);
* McNemar's exact test on the discordant items, per seed and pooled over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


@dataclass(frozen=True)
class PairedLead:
    """The lead of fine-tuning over transfer learning, with its paired uncertainty.

    ``items`` is the total number of test items over all seeds (seeds may differ in length).
    """

    lead: float  # mean over seeds of (finetune accuracy - transfer accuracy), 0..1 scale
    low: float  # lower end of the percentile bootstrap interval of `lead`
    high: float  # upper end
    level: float  # e.g. 0.95
    p_value: float  # McNemar exact test on discordant pairs summed over all seeds (two-sided)
    per_seed_p: tuple[float, ...]  # McNemar exact p per seed, in the seeds' order
    discordant: tuple[int, int]  # (b, c) summed over seeds: b = finetune right & transfer wrong
    seeds: int
    items: int  # total test items over all seeds

    def excludes_zero(self) -> bool:
        """True when the interval lies strictly on one side of 0, i.e. the lead is resolved."""
        return self.low > 0.0 or self.high < 0.0


def _as_correctness(values: np.ndarray, what: str) -> np.ndarray:
    """A 1-D boolean array; 0/1 integers are accepted because scored predictions often come as ints."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of per-item correctness, got shape {array.shape}")
    if array.dtype != bool:
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{what} must hold booleans or 0/1 values only")
        array = array.astype(bool)
    return array


def _discordant(finetune_right: np.ndarray, transfer_right: np.ndarray) -> tuple[int, int]:
    b = int(np.count_nonzero(finetune_right & ~transfer_right))
    c = int(np.count_nonzero(~finetune_right & transfer_right))
    return b, c


def _mcnemar_p(b: int, c: int) -> float:
    """Exact McNemar: under H0 each discordant item is equally likely to favour either side."""
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def mcnemar_exact(finetune_right: np.ndarray, transfer_right: np.ndarray) -> tuple[float, int, int]:
    """(two-sided exact p, b, c); p = 1.0 when there are no discordant pairs.

    b counts items fine-tuning got right and transfer got wrong, c the reverse. Only discordant items
    carry information about which strategy is better on paired data, hence the binomial test on them.
    """
    ft = _as_correctness(finetune_right, "finetune_right")
    tl = _as_correctness(transfer_right, "transfer_right")
    if ft.shape != tl.shape:
        raise ValueError(f"finetune_right and transfer_right differ in length: {ft.size} vs {tl.size}")
    b, c = _discordant(ft, tl)
    return _mcnemar_p(b, c), b, c


def paired_lead(finetune: list[np.ndarray], transfer: list[np.ndarray], level: float = 0.95,
                resamples: int = 10_000, seed: int = 0) -> PairedLead:
    """finetune[i], transfer[i]: boolean per-test-item correctness of seed i's two runs, scored on the
    same test items in the same order (equal length within a seed; seeds may differ in length).
    Paired bootstrap: with >= 2 seeds, resample seeds with replacement, then items within each
    chosen seed (two-stage / hierarchical bootstrap); with one seed, items only. The statistic of a
    resample is the mean over (resampled) seeds of that seed's resampled mean difference.
    Interval: percentile interval of the bootstrap distribution.

    Why it is fast: per-item differences take only the values +1/0/-1, so resampling a seed's items
    is a multinomial draw over three categories; a seed chosen m times in one resample contributes
    the sum of m independent such draws, which is one multinomial draw of m * n items. So each
    resample costs O(seeds) numbers, whatever the number of test items.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if int(resamples) < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if len(finetune) != len(transfer):
        raise ValueError(f"finetune and transfer list different numbers of seeds: "
                         f"{len(finetune)} vs {len(transfer)}")
    if len(finetune) == 0:
        raise ValueError("no seeds given: finetune and transfer are empty")

    sizes, probs, seed_leads, per_seed_p = [], [], [], []
    b_total = c_total = 0
    for i, (ft_raw, tl_raw) in enumerate(zip(finetune, transfer)):
        ft = _as_correctness(ft_raw, f"finetune[{i}]")
        tl = _as_correctness(tl_raw, f"transfer[{i}]")
        if ft.size != tl.size:
            raise ValueError(f"seed {i}: finetune and transfer differ in length: {ft.size} vs {tl.size}")
        if ft.size == 0:
            raise ValueError(f"seed {i}: no test items")
        b, c = _discordant(ft, tl)
        n = ft.size
        b_total, c_total = b_total + b, c_total + c
        per_seed_p.append(_mcnemar_p(b, c))
        sizes.append(n)
        probs.append(np.array([b, n - b - c, c], dtype=float) / n)  # P(d = +1), P(d = 0), P(d = -1)
        seed_leads.append((b - c) / n)  # = accuracy(finetune) - accuracy(transfer)

    k = len(sizes)
    rng = np.random.default_rng(seed)
    resamples = int(resamples)
    if k == 1:
        times_chosen = np.ones((resamples, 1), dtype=np.int64)
    else:
        # drawing k seeds with replacement = multinomial counts of how often each seed is chosen
        times_chosen = rng.multinomial(k, np.full(k, 1.0 / k), size=resamples)
    total = np.zeros(resamples)
    for i, (n, p) in enumerate(zip(sizes, probs)):
        counts = rng.multinomial(times_chosen[:, i] * n, p)  # (resamples, 3), summed over repeats
        total += (counts[:, 0] - counts[:, 2]) / n
    stats = total / k

    alpha = 1.0 - level
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return PairedLead(
        lead=float(np.mean(seed_leads)),
        low=float(low),
        high=float(high),
        level=float(level),
        p_value=_mcnemar_p(b_total, c_total),
        per_seed_p=tuple(per_seed_p),
        discordant=(b_total, c_total),
        seeds=k,
        items=int(sum(sizes)),
    )
