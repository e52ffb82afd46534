"""Seeded random streams and the arrival trace of one episode (reference spec §1.2).

One integer seed feeds independent, random-access streams: ``stream(seed, "arrivals",
episode)`` gives the same generator whatever else ran before, so episodes can be run,
resumed or vmapped in any order with identical results.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .config import Scenario

_STREAM_IDS = {
    "arrivals": 1,
    "density": 2,
    "scheduler": 3,
    "replay": 4,
    "jax": 5,
    "evaluation": 6,
    "faults": 7,
}


def stream(seed: int, name: str, *index: int) -> np.random.Generator:
    """An independent generator for (seed, stream name, index...)."""
    key = (_STREAM_IDS[name], *index)
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def stream_seed(seed: int, name: str, *index: int) -> int:
    """A 32-bit integer seed for libraries that want one (e.g. a JAX PRNG key)."""
    key = (_STREAM_IDS[name], *index)
    return int(np.random.SeedSequence(entropy=seed, spawn_key=key).generate_state(1)[0])


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
