"""Statistics of the report: intervals over seeds, the spread of per-seed values, and the published
runs given their start.

`predict_from_start`: how far a single published run is from what our seeds predict for it,
given where it started.

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
from typing import Any

import numpy as np
import pandas as pd


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


def predict_from_start(
    starts: np.ndarray, ends: np.ndarray, start: float, level: float = 0.95
) -> StartPrediction:
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
    return StartPrediction(
        runs=n,
        slope=float(fit.slope),
        intercept=float(fit.intercept),
        r=float(fit.rvalue),
        start=float(start),
        predicted=predicted,
        low=predicted - half,
        high=predicted + half,
        se=se,
    )


INTERVAL_RESAMPLES = 2000
INTERVAL_SEED = 0
INTERVAL_NOTE = "95 % percentile bootstrap interval of the mean over seeds (2 000 resamples)"
"""How every figure's and table's interval over seeds is made; captions quote it."""


def _bootstrap_means(x: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` resamples (with replacement) of each row of ``x`` (groups, n) -> (groups, resamples)."""
    rng = np.random.default_rng(seed)
    n = x.shape[-1]
    index = rng.integers(0, n, size=(resamples, n))
    return x[..., index].mean(axis=-1)


def _bounds(means: np.ndarray, level: float) -> np.ndarray:
    """The central ``level`` percentile bounds of bootstrap means, along the last axis: (2, ...)."""
    tail = 50 * (1 - level)
    return np.percentile(means, [tail, 100 - tail], axis=-1)


def percentile_interval(values: Any, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (deterministic: a fixed resampling seed).

    Its bounds are means of resamples of the values, so they never leave the values' range, nor
    therefore the metric's (a rate stays within [0, 1]). One value: the value as both bounds;
    none: NaN.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1 or np.ptp(x) == 0:
        return float(x.mean()), float(x.mean())
    lo, hi = _bounds(_bootstrap_means(x, INTERVAL_RESAMPLES, INTERVAL_SEED), level)
    return float(lo), float(hi)


def seed_spread(rows: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method, the spread of the per-seed make-spans of ``rows`` (one row per cell).

    ``gain``: the per-seed ratio of the make-span to the mean of the first `data.FIRST_EPISODES`
    online episodes (for a learner, its exploring start), averaged over seeds. A seed's
    density vector moves both alike, so the ratio compares learners across runs better
    than the make-span does.

    With ``published`` (indexed by method, columns ``makespan`` and ``first_makespan``):
    the published make-span and gain, and how many seeds are at or below the published
    make-span; a published run that beats nearly every seed of a faithful model is a lucky
    (or selected) run.
    """
    out = []
    for method, r in rows.groupby("method", sort=False):
        r = r.dropna(subset=["makespan"])
        x = r["makespan"]
        has_pub = published is not None and method in published.index
        pub = float(published.loc[method, "makespan"]) if has_pub else math.nan
        pub_first = float(published.loc[method, "first_makespan"]) if has_pub else math.nan
        out.append(
            {
                "method": method,
                "seeds": int(x.size),
                "mean": float(x.mean()),
                "sd": float(x.std(ddof=1)),
                "min": float(x.min()),
                "median": float(x.median()),
                "max": float(x.max()),
                "gain": float((x / r["first_makespan"]).mean()),
                "published": pub,
                "published_gain": pub / pub_first,
                "at_or_below_published": int((x <= pub).sum()) if has_pub else None,
            }
        )
    return pd.DataFrame(out)


def band(df: pd.DataFrame, by: list[str], value: str, level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: mean, count and the percentile bootstrap interval of ``value``'s mean
    (`percentile_interval`, vectorised over the groups of each size)."""
    g = df.groupby(by)[value]
    out = g.agg(["mean", "count"]).reset_index()
    out["lo"], out["hi"] = np.nan, np.nan
    values = g.apply(lambda v: v[np.isfinite(v)].to_numpy(float)).reset_index(drop=True)
    sizes = values.map(len).to_numpy()
    for n in sorted(set(sizes) - {0}):
        rows = np.flatnonzero(sizes == n)
        for chunk in np.array_split(rows, max(1, len(rows) // 256)):  # bounded memory: 256 x 2000 x n
            x = np.stack(values.iloc[chunk].to_list())
            if n == 1:
                out.loc[chunk, "lo"] = out.loc[chunk, "hi"] = x[:, 0]
                continue
            means = _bootstrap_means(x, INTERVAL_RESAMPLES, INTERVAL_SEED)
            out.loc[chunk, "lo"], out.loc[chunk, "hi"] = _bounds(means, level)
    return out
