"""`smcoedge` and `smcoedge-topk`: DQNs that pick k servers (reference spec §4 and §5).

* `smcoedge` — the copy in the AMCoEdge repository (its baseline): a flat DQN per BS whose
  outputs are the C(B, k) fixed k-subsets in lexicographic order (local server not forced).
* `smcoedge-topk` — the original SMCoEdge head: one Q-value per server; greedy = the k
  servers with the largest Q (descending), random = k distinct servers. Learning target:
  sort Q_target(s') descending; the j-th stored server gets r + γ·(j-th largest).

Fractions come from the scenario's allocation rule (CWA by default) on the true state.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from mecsim.allocation import subset_masks
from mecsim.scheduling import SchedulerError

from .dqn import BaselineDQNConfig, DQNScheduler


@dataclass(frozen=True)
class SMCoEdgeConfig(BaselineDQNConfig):
    """Flat k-subset DQN hyper-parameters (reference values: AMCoEdge/Baselines/SMCoEdge),
    (1 + B) → 20 → 20 → C(B, k)."""

    k: int = 3  # servers per task


@dataclass(frozen=True)
class SMCoEdgeTopKConfig(SMCoEdgeConfig):
    """Top-k per-server head hyper-parameters (reference values: SMCoEdge repository), (1 + B) → 20 → 20 → B."""

    init_std: float = 0.3


def _check_k(name: str, k: int, n_bs: int) -> None:
    if not 1 <= k <= n_bs:
        raise SchedulerError(f"scheduler {name!r}: k = {k} must be between 1 and the number of servers {n_bs}")


class SMCoEdgeScheduler(DQNScheduler):
    name = "smcoedge"
    config_class = SMCoEdgeConfig

    def _validate(self, config: SMCoEdgeConfig) -> None:
        _check_k(self.name, config.k, self.n_bs)
        masks = subset_masks(self.n_bs)
        self.k_subsets = masks[masks.sum(axis=1) == config.k]  # lexicographic within a size

    def n_actions(self) -> int:
        return comb(self.n_bs, self.config.k)

    def subsets(self, actions: np.ndarray, bs: np.ndarray) -> np.ndarray:
        return self.k_subsets[actions[:, 0]]


class SMCoEdgeTopKScheduler(DQNScheduler):
    name = "smcoedge-topk"
    config_class = SMCoEdgeTopKConfig

    @property
    def action_width(self) -> int:  # the k chosen servers, in the order they were chosen
        return self.config.k

    def _validate(self, config: SMCoEdgeTopKConfig) -> None:
        _check_k(self.name, config.k, self.n_bs)

    def n_actions(self) -> int:
        return self.n_bs

    def greedy(self, q: np.ndarray, bs: np.ndarray) -> np.ndarray:
        return np.argsort(-q, axis=1, kind="stable")[:, : self.config.k]

    def random_actions(self, n: int, bs: np.ndarray) -> np.ndarray:
        return np.argsort(self.rng.random((n, self.n_bs)), axis=1)[:, : self.config.k]

    def subsets(self, actions: np.ndarray, bs: np.ndarray) -> np.ndarray:
        masks = np.zeros((actions.shape[0], self.n_bs))
        np.put_along_axis(masks, actions, 1.0, axis=1)
        return masks
