"""`smcoedge` and `smcoedge-topk`: DQNs that pick k servers (reference spec §4 and §5).

* `smcoedge` — the copy in the AMCoEdge repository (its baseline): a flat DQN per BS whose
  outputs are the C(B, k) fixed k-subsets in lexicographic order (local server not forced).
* `smcoedge-topk` — the original SMCoEdge head: one Q-value per server; greedy = the k
  servers with the largest Q (descending), random = k distinct servers. Learning target:
  sort Q_target(s') descending; the j-th stored server gets r + γ·(j-th largest).

Fractions come from the scenario's allocation rule (CWA by default) on the true state.
"""

from __future__ import annotations

from pydantic import Field

from mecsim.learning.dqn import BaselineDQNConfig
from mecsim.learning.heads import FixedKSubsets, TopK
from mecsim.scheduling import SchedulerError

from .dqn import DQNScheduler


class SMCoEdgeConfig(BaselineDQNConfig):
    """Flat k-subset DQN hyper-parameters (reference values: AMCoEdge/Baselines/SMCoEdge),
    (1 + B) → 20 → 20 → C(B, k)."""

    k: int = 3
    """servers per task"""


class SMCoEdgeTopKConfig(SMCoEdgeConfig):
    """Top-k per-server head hyper-parameters (reference values: SMCoEdge repository), (1 + B) → 20 → 20 → B."""

    init_std: float = Field(0.3, ge=0)
    """weights ~ N(0, init_std)"""


class SMCoEdgeScheduler(DQNScheduler):
    name = "smcoedge"
    config_class = SMCoEdgeConfig
    head_class: type[FixedKSubsets | TopK] = FixedKSubsets

    def make_head(self, config: SMCoEdgeConfig) -> FixedKSubsets | TopK:
        if not 1 <= config.k <= self.n_bs:
            raise SchedulerError(
                f"scheduler {self.name!r}: k = {config.k} must be between 1 and the number of servers {self.n_bs}"
            )
        return self.head_class(self.n_bs, config.k)


class SMCoEdgeTopKScheduler(SMCoEdgeScheduler):
    name = "smcoedge-topk"
    config_class = SMCoEdgeTopKConfig
    head_class = TopK
