"""`local`: every task runs entirely on the edge server of the BS where it arrives."""
from __future__ import annotations

import numpy as np

from mecsim.scheduling import Decision, Observation, Scheduler, SlotObservation


class LocalScheduler(Scheduler):
    name = "local"

    def decide(self, obs: Observation) -> Decision:
        return Decision.to(obs.bs, obs.n_servers)

    def decide_slot(self, obs: SlotObservation) -> Decision:
        onehot = np.eye(obs.scenario.n_bs)[obs.bs]
        return Decision(onehot, onehot)

    def jax_policy(self):
        """The same rule for the compiled kernel (`mecsim.kernel`)."""
        from mecsim.kernel import JaxPolicy, local_decide

        return JaxPolicy(local_decide)
