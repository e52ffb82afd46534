"""Replaying recorded decisions on the kernel (parity checks against the Python path)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...arrivals import Trace
from ...config import Scenario
from .layout import slot_counts
from .shape import KernelContext, KernelTask


def replay_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """Given subsets, allocated by the scenario's rule on the true state.

    ``params`` (T, W, B): the subset of the task at (slot, position in slot); see `replay_params`.
    """
    subset = params[task.slot, task.pos]
    return subset, ctx.allocate(task, subset)


def replay_fractions_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """Given subsets and fractions: ``params`` is a pair of (T, W, B) arrays, see `replay_params`."""
    subsets, fractions = params
    return subsets[task.slot, task.pos], fractions[task.slot, task.pos]


def replay_params(
    scenario: Scenario, traces: Sequence[Trace], rows: Sequence[np.ndarray], width: int | None = None
) -> np.ndarray:
    """Each replica's per-task rows (n_tasks, B) in TaskLog order (subsets or fractions) laid out as
    replay params (R, T, W, B), indexed by (slot, position in slot); W: ``width`` or the largest slot."""
    t_slots = scenario.decision_slots
    per_slot = [slot_counts(tr, t_slots) for tr in traces]
    width = width or max(1, max(int(c.max(initial=0)) for c in per_slot))
    out = np.zeros((len(traces), t_slots, width, scenario.n_bs))
    out[..., 0] = 1.0  # padding: any valid decision
    for i, (counts, values) in enumerate(zip(per_slot, rows)):
        valid = np.arange(width) < counts[:, None]
        out[i][valid] = values
    return out
