"""`drlcoedge`: a DQN per BS choosing one collaborator (reference spec §4, DRLCoEdge baseline).

Action a ∈ 0..B−1: a equal to the arrival BS b means "local only", otherwise the task is
shared by {b, a} with the scenario's allocation rule (CWA by default).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dqn import DQNConfig, DQNScheduler


@dataclass(frozen=True)
class DRLCoEdgeConfig(DQNConfig):
    """DRLCoEdge hyper-parameters (reference values: AMCoEdge/Baselines/DRLCoEdge)."""

    hidden: tuple[int, ...] = (20, 20)  # (1 + B) → 20 → 20 → B
    init_std: float = 0.5
    bias_init: float = 0.1
    lr: float = 1e-3
    gamma: float = 0.9
    memory_size: int = 1024
    batch_size: int = 32
    replace_target_iter: int = 200
    learn_start: int = 200
    learn_every: int = 10
    greedy_start: float = 0.0
    greedy_increment: float = 0.001
    greedy_max: float = 0.99


class DRLCoEdgeScheduler(DQNScheduler):
    name = "drlcoedge"
    config_class = DRLCoEdgeConfig

    def n_actions(self) -> int:
        return self.n_bs

    def subsets(self, actions: np.ndarray, bs: np.ndarray) -> np.ndarray:
        eye = np.eye(self.n_bs)
        return np.maximum(eye[np.asarray(bs)], eye[actions[:, 0]])
