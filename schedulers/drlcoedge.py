"""`drlcoedge`: a DQN per BS choosing one collaborator (reference spec §4, DRLCoEdge baseline).

Action a ∈ 0..B−1: a equal to the arrival BS b means "local only", otherwise the task is
shared by {b, a} with the scenario's allocation rule (CWA by default).
"""

from __future__ import annotations

from mecsim.learning.dqn import BaselineDQNConfig
from mecsim.learning.heads import OneCollaborator

from .dqn import DQNScheduler


class DRLCoEdgeConfig(BaselineDQNConfig):
    """DRLCoEdge hyper-parameters (reference values: AMCoEdge/Baselines/DRLCoEdge), (1 + B) → 20 → 20 → B."""


class DRLCoEdgeScheduler(DQNScheduler):
    name = "drlcoedge"
    config_class = DRLCoEdgeConfig

    def make_head(self, config: DRLCoEdgeConfig) -> OneCollaborator:
        return OneCollaborator(self.n_bs)
