"""From mecsim's arrival trace to image-repair requests, and back to the trace the simulator replays.

A task of size d (Mbit) and density ρ (Gcycles/Mbit) at BS b becomes a request of
``images = round(d / image_mbit)`` images (1..max_images) with ``steps`` denoising steps per
image, the step choice nearest to ρ·image_mbit / seconds_per_evaluation. The *realised* trace
holds what the prototype really does — size images·image_mbit, work images·steps·c — and results
of images·result_mbit, so the simulator is given exactly the prototype's tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arrivals import Trace, episode_trace
from ..config import Scenario
from .config import PrototypeConfig


@dataclass(frozen=True)
class Requests:
    images: np.ndarray  # (slots, B, N) images per request, 0 = no task
    steps: np.ndarray  # (slots, B, N) denoising steps per image

    def trace(self, config: PrototypeConfig) -> Trace:
        """The realised trace: sizes, densities (Gcycles/Mbit) and result sizes of the real requests."""
        present = self.images > 0
        sizes = self.images * config.image_mbit
        per_mbit = config.service.seconds_per_evaluation / config.image_mbit
        densities = np.where(present, self.steps * per_mbit, 0.0)
        return Trace(sizes, densities, self.images * config.result_mbit)


def requests_of(config: PrototypeConfig, seed: int, episode: int = 0) -> Requests:
    """The requests of one episode of ``config.scenario``'s arrival process (the simulator's own trace)."""
    trace = episode_trace(config.scenario, seed, episode)
    present = trace.sizes > 0
    images = np.where(
        present, np.clip(np.rint(trace.sizes / config.image_mbit), 1, config.service.max_images), 0
    )
    wanted = np.asarray(trace.densities) * config.image_mbit / config.service.seconds_per_evaluation
    choices = np.asarray(config.service.step_choices)
    steps = choices[np.abs(wanted[..., None] - choices).argmin(axis=-1)]
    return Requests(images.astype(int), np.where(present, steps, 0).astype(int))


def sim_scenario(config: PrototypeConfig, capacities=None, rates=None) -> Scenario:
    """The event-model scenario of the prototype: its results downloaded (not for the local share),
    with calibrated capacities and rates where given."""
    service = config.service
    return config.scenario.replace(
        {
            "result_range": [config.result_mbit, service.max_images * config.result_mbit],
            "variant.local_download": False,
            **({"capacities": list(capacities)} if capacities is not None else {}),
            **({"rates": list(rates)} if rates is not None else {}),
        }
    )


def largest_remainder(fractions, total: int) -> np.ndarray:
    """Integer shares of ``total`` closest to ``fractions`` (which sum to 1): floors, then the largest remainders."""
    exact = np.asarray(fractions, float) * total
    counts = np.floor(exact + 1e-9).astype(int)
    short = total - int(counts.sum())
    if short > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts
