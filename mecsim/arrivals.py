"""The arrival trace of one episode (reference spec §1.2), drawn from its own seeded stream."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .config import Scenario
from .streams import stream


class Trace(NamedTuple):
    """Task sizes (slots, B, N) in Mbit (0 = no task) and densities in Gcycles/Mbit."""

    sizes: np.ndarray
    densities: np.ndarray  # (slots, B, N); constant along (slot, B) when drawn per task index


def task_densities(scenario: Scenario, seed: int) -> np.ndarray:
    """The per-task-index density vector ρ_n, drawn once per run (the reference's quirk)."""
    lo, hi = scenario.density_gcycles_per_mbit
    return stream(seed, "density").uniform(lo, hi, scenario.tasks_per_slot)


def episode_trace(scenario: Scenario, seed: int, episode: int, stream_name: str = "arrivals") -> Trace:
    """Bernoulli arrivals with uniform sizes for every (slot, BS, task slot) of one episode."""
    rng = stream(seed, stream_name, episode)
    shape = (scenario.slots, scenario.n_bs, scenario.tasks_per_slot)
    present = rng.random(shape) < scenario.arrival_prob
    sizes = np.where(present, rng.uniform(*scenario.size_range, shape), 0.0)
    if scenario.density_per_task_index:
        densities = np.broadcast_to(task_densities(scenario, seed), shape)
    else:
        lo, hi = scenario.density_gcycles_per_mbit
        densities = rng.uniform(lo, hi, shape)
    return Trace(sizes, densities)
