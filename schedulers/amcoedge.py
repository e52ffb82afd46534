"""`amcoedge` (AdaDQN): a DQN per BS choosing any of the 2^B − 1 server subsets (reference spec §3).

Actions are `mecsim.allocation.subset_masks(B)`: by size, then lexicographically; the local
server is not forced into the subset. The fractions come from the scenario's allocation
rule (CWA or HECWA) on the true state when the task executes.
"""

from __future__ import annotations

from mecsim.learning.dqn import DQNConfig
from mecsim.learning.heads import AllSubsets
from mecsim.scheduling import require_subset_enumeration

from .dqn import DQNScheduler


class AMCoEdgeConfig(DQNConfig):
    """AdaDQN hyper-parameters (reference values: AMCoEdge main.py / AdaDQN.py): the `DQNConfig` defaults,
    (1 + B) → 20 → 20 → 20 → 2^B − 1."""


class AMCoEdgeScheduler(DQNScheduler):
    name = "amcoedge"
    config_class = AMCoEdgeConfig

    def make_head(self, config: AMCoEdgeConfig) -> AllSubsets:
        require_subset_enumeration(self.name, self.n_bs)
        return AllSubsets(self.n_bs)
