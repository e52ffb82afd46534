"""Seeded random streams: one integer seed feeds independent, random-access generators.

``stream(seed, "arrivals", episode)`` gives the same generator whatever else ran before, so
episodes can be run, resumed or vmapped in any order with identical results.
"""

from __future__ import annotations

import numpy as np

_STREAM_IDS = {
    "arrivals": 1,
    "density": 2,
    "scheduler": 3,
    "replay": 4,
    "jax": 5,
    "evaluation": 6,
    "faults": 7,
    "task_index": 8,
}


def stream(seed: int, name: str, *index: int) -> np.random.Generator:
    """An independent generator for (seed, stream name, index...)."""
    key = (_STREAM_IDS[name], *index)
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def stream_seed(seed: int, name: str, *index: int) -> int:
    """A 32-bit integer seed for libraries that want one (e.g. a JAX PRNG key)."""
    key = (_STREAM_IDS[name], *index)
    return int(np.random.SeedSequence(entropy=seed, spawn_key=key).generate_state(1)[0])
