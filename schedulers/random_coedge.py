"""`random` (RandCoEdge): the local server plus one uniformly drawn collaborator.

A draw equal to the arrival BS means "local only" (reference spec §4). The pair's
fractions come from the scenario's allocation rule (CWA by default) on the true state.
"""
from __future__ import annotations

import numpy as np

from mecsim.scheduling import Decision, Observation, Scheduler, SlotObservation


class RandomScheduler(Scheduler):
    name = "random"

    def decide(self, obs: Observation) -> Decision:
        other = int(self.rng.integers(obs.n_servers))
        return Decision.split({obs.bs, other}, obs.n_servers)

    def decide_slot(self, obs: SlotObservation) -> Decision:
        n = obs.scenario.n_bs
        eye = np.eye(n)
        other = self.rng.integers(n, size=len(obs))
        subsets = np.maximum(eye[obs.bs], eye[other])
        return Decision(subsets, None)

    def jax_policy(self):
        """The same rule for the compiled kernel (`mecsim.kernel`); draws come from a JAX key per episode
        (seed's scheduler stream, episode), so they differ from the NumPy stream of this class."""
        from mecsim.kernel import JaxPolicy, random_decide

        return JaxPolicy(random_decide)
