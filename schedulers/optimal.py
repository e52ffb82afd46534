"""`optimal`: greedy per task over every non-empty subset (reference spec §4, "Optimal").

Each candidate is allocated with the scenario's rule and judged by the delay model's
make-span; the smallest wins, ties going to the first subset in enumeration order
(size, then lexicographic). Myopic: it does not plan ahead for later tasks.
"""
from __future__ import annotations

import numpy as np

from mecsim.allocation import subset_masks
from mecsim.scheduling import Decision, Observation, Scheduler


class OptimalScheduler(Scheduler):
    name = "optimal"

    def __init__(self, scenario, rng=None, **options):
        super().__init__(scenario, rng, **options)
        self.masks = subset_masks(scenario.n_bs)

    def decide(self, obs: Observation) -> Decision:
        fractions, spans = obs.evaluate(self.masks)
        best = int(np.argmin(spans))
        return Decision(self.masks[best], fractions[best])

    def jax_policy(self):
        """The same greedy choice for the compiled kernel (`mecsim.kernel`)."""
        from mecsim.kernel import JaxPolicy, optimal_decide

        return JaxPolicy(optimal_decide)
