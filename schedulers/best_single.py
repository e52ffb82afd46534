"""`best-single`: the whole task on the one edge server with the smallest expected make-span."""
from __future__ import annotations

import numpy as np

from mecsim.scheduling import Decision, Observation, Scheduler


class BestSingleScheduler(Scheduler):
    name = "best-single"

    def __init__(self, scenario, rng=None, **options):
        super().__init__(scenario, rng, **options)
        self.masks = np.eye(scenario.n_bs)

    def decide(self, obs: Observation) -> Decision:
        _, spans = obs.evaluate(self.masks)
        best = int(np.argmin(spans))
        return Decision(self.masks[best], self.masks[best])

    def jax_policy(self):
        """The same choice for the compiled kernel (`mecsim.kernel`)."""
        from mecsim.kernel import JaxPolicy, best_single_decide

        return JaxPolicy(best_single_decide)
