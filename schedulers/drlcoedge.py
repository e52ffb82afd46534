"""`drlcoedge`: a DQN per BS choosing one collaborator (reference spec §4, DRLCoEdge baseline).

Action a ∈ 0..B−1: a equal to the arrival BS b means "local only", otherwise the task is
shared by {b, a} with the scenario's allocation rule (CWA by default).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dqn import BaselineDQNConfig, DQNScheduler


@dataclass(frozen=True)
class DRLCoEdgeConfig(BaselineDQNConfig):
    """DRLCoEdge hyper-parameters (reference values: AMCoEdge/Baselines/DRLCoEdge), (1 + B) → 20 → 20 → B."""


class DRLCoEdgeScheduler(DQNScheduler):
    name = "drlcoedge"
    config_class = DRLCoEdgeConfig

    def n_actions(self) -> int:
        return self.n_bs

    def subsets(self, actions: np.ndarray, bs: np.ndarray) -> np.ndarray:
        eye = np.eye(self.n_bs)
        return np.maximum(eye[np.asarray(bs)], eye[actions[:, 0]])
