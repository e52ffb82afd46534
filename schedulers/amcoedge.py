"""`amcoedge` (AdaDQN): a DQN per BS choosing any of the 2^B − 1 server subsets (reference spec §3).

Actions are `mecsim.allocation.subset_masks(B)`: by size, then lexicographically; the local
server is not forced into the subset. The fractions come from the scenario's allocation
rule (CWA or HECWA) on the true state when the task executes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mecsim.allocation import subset_masks

from .dqn import DQNConfig, DQNScheduler


@dataclass(frozen=True)
class AMCoEdgeConfig(DQNConfig):
    """AdaDQN hyper-parameters (reference values: AMCoEdge main.py / AdaDQN.py): the `DQNConfig` defaults,
    (1 + B) → 20 → 20 → 20 → 2^B − 1."""


class AMCoEdgeScheduler(DQNScheduler):
    name = "amcoedge"
    config_class = AMCoEdgeConfig

    def n_actions(self) -> int:
        return 2**self.n_bs - 1

    def subsets(self, actions: np.ndarray, bs: np.ndarray) -> np.ndarray:
        return subset_masks(self.n_bs)[actions[:, 0]]
