"""The arrival trace of one episode (reference spec §1.2, §6.1), drawn from its own seeded stream.

Two arrival processes: ``bernoulli`` (each of the N task slots of a (slot, BS) holds a task
with probability p; AMCoEdge) and ``uniform_count`` (1..N tasks per (slot, BS), uniformly,
in task slots 0..count-1; DEdgeAI). Two workloads: ``density`` (work d·ρ) and ``steps``
(work ρ_n·q_n, Gcycles per diffusion step times steps, independent of the size d; DEdgeAI),
carried as the density ρ_n·q_n/d so that the models' work d·density is the task's work.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .config import Scenario
from .streams import stream


class Trace(NamedTuple):
    """Task sizes (slots, B, N) in Mbit (0 = no task), densities in Gcycles/Mbit, result sizes in Mbit
    (None: no result download)."""

    sizes: np.ndarray
    densities: np.ndarray  # (slots, B, N); constant along (slot, B) when drawn per task index
    results: np.ndarray | None = None  # (slots, B, N) or broadcastable to it


def task_densities(scenario: Scenario, seed: int) -> np.ndarray:
    """The per-task-index density vector ρ_n, drawn once per run (the reference's quirk)."""
    lo, hi = scenario.density_gcycles_per_mbit
    return stream(seed, "density").uniform(lo, hi, scenario.tasks_per_slot)


def _steps_work(scenario: Scenario, rng: np.random.Generator, shape: tuple[int, ...]):
    """Work ρ·q (Gcycles) and result sizes (Mbit, or None) of the steps workload."""
    u = rng.random(shape)
    lo, hi = scenario.step_work_range
    per_step = lo + (hi - lo) * u
    steps = rng.integers(scenario.steps_range[0], scenario.steps_range[1] + 1, shape)
    results = None
    if scenario.result_range is not None:
        r_lo, r_hi = scenario.result_range
        results = r_lo + (r_hi - r_lo) * (u if scenario.result_follows_work else rng.random(shape))
    return per_step * steps, results


def episode_trace(scenario: Scenario, seed: int, episode: int, stream_name: str = "arrivals") -> Trace:
    """Every (slot, BS, task slot) of one episode: which hold a task, their sizes, densities and results."""
    rng = stream(seed, stream_name, episode)
    shape = (scenario.slots, scenario.n_bs, scenario.tasks_per_slot)
    if scenario.arrivals == "bernoulli":
        present = rng.random(shape) < scenario.arrival_prob
    else:
        counts = rng.integers(1, scenario.tasks_per_slot + 1, shape[:2])
        present = np.arange(scenario.tasks_per_slot) < counts[..., None]
    sizes = np.where(present, rng.uniform(*scenario.size_range, shape), 0.0)
    results = None
    if scenario.workload == "steps":
        if scenario.density_per_task_index:
            work, results = _steps_work(scenario, stream(seed, "task_index"), (scenario.tasks_per_slot,))
        else:
            work, results = _steps_work(scenario, rng, shape)
        densities = work / np.where(present, sizes, 1.0)
    elif scenario.density_per_task_index:
        densities = np.broadcast_to(task_densities(scenario, seed), shape)
    else:
        lo, hi = scenario.density_gcycles_per_mbit
        densities = rng.uniform(lo, hi, shape)
    if results is None and scenario.result_range is not None:
        if scenario.density_per_task_index:
            results = stream(seed, "task_index", 1).uniform(*scenario.result_range, scenario.tasks_per_slot)
        else:
            results = rng.uniform(*scenario.result_range, shape)
    if results is not None:
        results = np.broadcast_to(results, shape)
    return Trace(sizes, densities, results)
