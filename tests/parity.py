"""What the parity tests of the compiled kernels (slotted and event) share: the instrumented Python-path
scheduler, and arbitrary decisions to replay on both paths."""

from __future__ import annotations

import numpy as np

from mecsim.arrivals import episode_trace
from mecsim.scheduling import Scheduler


class Watch(Scheduler):
    """Per-task decisions of ``inner`` (or given ones: ``decisions(k)`` for the k-th task), recording what each
    task sees: backlog, current backlog, link waits and waits, concatenated."""

    name = "watch"

    def __init__(self, scenario, inner=None, decisions=None):
        super().__init__(scenario)
        self.inner, self.decisions, self.seen = inner, decisions, []

    def decide(self, obs):
        self.seen.append(np.concatenate([obs.backlog, obs.current_backlog, obs.tx_backlog, obs.wait]))
        if self.decisions is not None:
            return self.decisions(len(self.seen) - 1)
        return self.inner.decide(obs)


def random_decisions(scenario, salt: int):
    """Episode 0's trace, and for each of its tasks an arbitrary subset (B,) with explicit fractions (zero
    shares inside a subset included)."""
    trace = episode_trace(scenario, scenario.seed, 0)
    n_tasks, b = np.count_nonzero(trace.sizes[: scenario.decision_slots]), scenario.n_bs
    rng = np.random.default_rng(salt)
    subsets = (rng.random((n_tasks, b)) < 0.5).astype(float)
    subsets[np.arange(n_tasks), rng.integers(b, size=n_tasks)] = 1.0
    weights = rng.random((n_tasks, b)) * subsets * (rng.random((n_tasks, b)) < 0.8)
    weights[weights.sum(axis=1) == 0] = subsets[weights.sum(axis=1) == 0]
    return trace, subsets, weights / weights.sum(axis=1, keepdims=True)
