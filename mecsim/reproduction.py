"""How far a single published run is from what our seeds predict for it, given where it started.

A run of the reference code draws its density vector ρ_n once (spec §1.1), so a run's
whole curve sits higher or lower with its draw: the mean of the first episodes (the
exploring start, a near-random policy) and the mean of the last ones move together across
runs. A published CSV is one run whose start we can read. Regressing our per-seed end on
our per-seed start and reading the line at the published start asks the fairer question:
is the published end what a run that started there would reach?
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StartPrediction:
    """Least-squares line end = intercept + slope·start over runs, read at one start."""

    runs: int
    slope: float
    intercept: float
    r: float
    start: float
    predicted: float
    low: float
    """95 % prediction interval for one new run that starts at ``start``."""
    high: float
    se: float
    """Standard error of one new run's end at ``start`` (residual and line uncertainty)."""

    def p_value(self, observed_end: float) -> float:
        """Two-sided t-test of one observed run's end against the prediction (runs − 2 dof)."""
        from scipy import stats

        t = (observed_end - self.predicted) / self.se
        return float(2 * stats.t.sf(abs(t), self.runs - 2))


def predict_from_start(starts: np.ndarray, ends: np.ndarray, start: float, level: float = 0.95) -> StartPrediction:
    """The line through (start, end) of each run, read at ``start`` with its prediction interval.

    Needs at least 3 runs with distinct starts; raises ``ValueError`` otherwise.
    """
    from scipy import stats

    x = np.asarray(starts, dtype=float)
    y = np.asarray(ends, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"starts and ends must be 1-D and of equal length, got {x.shape} and {y.shape}")
    n = x.size
    sxx = float(((x - x.mean()) ** 2).sum())
    if n < 3 or sxx == 0.0:
        raise ValueError(f"need at least 3 runs with distinct starts, got {n} run(s)")
    fit = stats.linregress(x, y)
    residuals = y - (fit.intercept + fit.slope * x)
    s = math.sqrt(float((residuals**2).sum()) / (n - 2))
    se = s * math.sqrt(1 + 1 / n + (start - x.mean()) ** 2 / sxx)
    predicted = float(fit.intercept + fit.slope * start)
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * se
    return StartPrediction(runs=n, slope=float(fit.slope), intercept=float(fit.intercept), r=float(fit.rvalue),
                           start=float(start), predicted=predicted, low=predicted - half, high=predicted + half, se=se)
