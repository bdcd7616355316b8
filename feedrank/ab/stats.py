"""Ratio metrics clustered by user, the relative lift's interval, and the SRM test.

Users are the unit of randomisation, so a user's impressions are not
independent draws: a CTR is the ratio of two per-user sums,
``R = sum_u c_u / sum_u n_u`` (clicks over impressions), and its variance is
taken over users (the delta method for a ratio of means):

    Var(R) ~= sum_u (c_u - R n_u)^2 / (m (m - 1) nbar^2)        (m users, nbar = mean n_u)

The lift of arm B over arm A is ``R_B / R_A - 1``.  Its interval is built on
the log scale, ``log R_B - log R_A +- z * sqrt(Var_B / R_B^2 + Var_A / R_A^2)``,
then mapped back with ``exp(.) - 1``; the ratio of two noisy means is skewed to
the right and the log makes it symmetric, so the log interval covers better
than the linear one (``scale="linear"``, kept for the comparison; docs/ab.md
and benchmarks/ab_coverage.py measure both).  `bootstrap_lift` resamples users
within each arm as a cross-check.
"""
from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import Optional

import numpy as np

from feedrank.ab import ABError

SCALES = ("log", "linear")


def z_value(level: float) -> float:
    """The two-sided normal quantile of a confidence level (0.95 -> 1.95996)."""
    if not 0.0 < level < 1.0:
        raise ABError(f"confidence level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


@dataclasses.dataclass(frozen=True)
class Ratio:
    """A ratio of per-user sums: the estimate, its delta-method variance, the sums and the users."""

    ratio: float
    var: float
    num: float
    den: float
    users: int

    @property
    def se(self) -> float:
        return math.sqrt(self.var) if self.var >= 0 else float("nan")


def ratio(num: np.ndarray, den: np.ndarray) -> Ratio:
    """``sum(num) / sum(den)`` over users with its delta-method (user-clustered) variance.

    ``num[u]`` and ``den[u]`` are user u's sums (clicks and impressions). The
    variance needs two users; with one it is NaN.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ABError(f"per-user numerators and denominators must be two 1-d arrays of one length, "
                      f"got shapes {num.shape} and {den.shape}")
    m = len(num)
    total = float(den.sum())
    if m == 0 or total <= 0:
        raise ABError("a ratio needs at least one user with a positive denominator (no impressions)")
    r = float(num.sum()) / total
    if m < 2:
        return Ratio(r, float("nan"), float(num.sum()), total, m)
    nbar = total / m
    resid = num - r * den
    var = float(np.dot(resid, resid)) / (m * (m - 1) * nbar * nbar)
    return Ratio(r, var, float(num.sum()), total, m)


@dataclasses.dataclass(frozen=True)
class Lift:
    """Relative lift ``B / A - 1`` with its confidence interval."""

    estimate: float
    lo: float
    hi: float
    se_log: float       # standard error of log(B / A)
    p_value: float      # two-sided, H0: no lift (on the log scale)
    level: float
    scale: str

    def excludes(self, value: float = 0.0) -> bool:
        return self.lo > value or self.hi < value

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in dataclasses.asdict(self).items()}


def lift(b: Ratio, a: Ratio, level: float = 0.95, scale: str = "log") -> Lift:
    """The lift of B over A with a ``level`` interval on the ``scale`` ("log" or "linear")."""
    if scale not in SCALES:
        raise ABError(f"scale must be one of {SCALES}, got {scale!r}")
    if a.ratio <= 0:
        raise ABError("the champion arm has no clicks (or conversions): the relative lift is undefined")
    z = z_value(level)
    est = b.ratio / a.ratio - 1.0
    if b.ratio <= 0:  # log(0): no interval on the log scale; the linear one still exists
        se_log = float("inf")
    else:
        se_log = math.sqrt(b.var / b.ratio ** 2 + a.var / a.ratio ** 2)
    if scale == "log" and math.isfinite(se_log):
        d = math.log(b.ratio / a.ratio)
        lo, hi = math.exp(d - z * se_log) - 1.0, math.exp(d + z * se_log) - 1.0
    else:
        # d(B/A) = (B/A) (dB/B - dA/A): the same variance, without the log.
        se_lin = math.sqrt(b.var / a.ratio ** 2 + (b.ratio ** 2) * a.var / a.ratio ** 4)
        lo, hi = est - z * se_lin, est + z * se_lin
    if math.isfinite(se_log) and se_log > 0:
        p = math.erfc(abs(math.log(b.ratio / a.ratio)) / se_log / math.sqrt(2.0))
    else:
        p = float("nan")
    return Lift(est, lo, hi, se_log, p, level, scale)


def bootstrap_lift(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
                   reps: int = 2000, level: float = 0.95, seed: int = 0,
                   chunk: Optional[int] = None) -> Lift:
    """The lift's percentile interval from resampling users with replacement within each arm.

    The cross-check of `lift`: no delta method, no normality, the same unit
    (users). ``se_log`` is the standard deviation of the replicates' log ratio.
    """
    z_value(level)
    if reps < 100:
        raise ABError(f"a bootstrap needs >= 100 replicates, got {reps}")
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(x, dtype=np.float64) for x in (num_a, den_a, num_b, den_b)]
    logs = np.empty(reps)
    step = chunk or max(1, min(reps, 2_000_000 // max(1, len(arrays[0]) + len(arrays[2]))))
    for start in range(0, reps, step):
        k = min(step, reps - start)
        parts = []
        for num, den in (arrays[0:2], arrays[2:4]):
            idx = rng.integers(0, len(num), size=(k, len(num)))
            parts.append(num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-300))
        with np.errstate(divide="ignore"):
            logs[start:start + k] = np.log(parts[1]) - np.log(parts[0])
    point = ratio(arrays[2], arrays[3]).ratio / ratio(arrays[0], arrays[1]).ratio - 1.0
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(logs, [alpha, 1.0 - alpha])
    finite = logs[np.isfinite(logs)]
    p = 2.0 * min(float(np.mean(logs <= 0)), float(np.mean(logs >= 0)))
    return Lift(point, float(np.exp(lo) - 1.0), float(np.exp(hi) - 1.0),
                float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan"), min(p, 1.0), level, "bootstrap")


@dataclasses.dataclass(frozen=True)
class SampleRatio:
    """Sample-ratio-mismatch test: users per arm against the configured share (chi-square, 1 df)."""

    champion: int
    challenger: int
    share: float
    expected_challenger: float
    chi2: float
    p_value: float

    @property
    def observed_share(self) -> float:
        total = self.champion + self.challenger
        return self.challenger / total if total else float("nan")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "observed_share": self.observed_share}


def srm(champion: int, challenger: int, share: float) -> SampleRatio:
    """Pearson's chi-square of the users per arm against ``share`` (the challenger's); p from 1 df.

    With one degree of freedom the statistic is a squared standard normal, so
    ``p = erfc(sqrt(chi2 / 2))``.
    """
    if not 0.0 < share < 1.0:
        raise ABError(f"the challenger's share must be in (0, 1), got {share}")
    total = champion + challenger
    if total <= 0:
        raise ABError("no users in either arm: nothing to test for a sample-ratio mismatch")
    e_b = total * share
    e_a = total - e_b
    chi2 = (champion - e_a) ** 2 / e_a + (challenger - e_b) ** 2 / e_b
    return SampleRatio(int(champion), int(challenger), share, e_b, chi2, math.erfc(math.sqrt(chi2 / 2.0)))
