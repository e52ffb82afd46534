"""`optimal`: greedy per task over every non-empty subset (reference spec §4, "Optimal").

Each candidate is allocated with the scenario's rule and judged by the delay model's
make-span; the smallest wins, ties going to the first subset in enumeration order
(size, then lexicographic). Myopic: it does not plan ahead for later tasks.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mecsim.allocation import subset_masks
from mecsim.backends.kernel.shape import JaxPolicy, KernelContext, KernelTask
from mecsim.scheduling import Decision, Observation, Scheduler, require_subset_enumeration


def optimal_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """The kernel form: the smallest make-span over every subset, ties to the lowest enumeration index."""
    fractions, spans = ctx.evaluate(task)
    best = jnp.argmin(spans)
    return ctx.masks[best], fractions[best]


class OptimalScheduler(Scheduler):
    name = "optimal"

    def __init__(self, scenario, rng=None, **options):
        super().__init__(scenario, rng, **options)
        require_subset_enumeration(self.name, scenario.n_bs)
        self.masks = subset_masks(scenario.n_bs)

    def decide(self, obs: Observation) -> Decision:
        fractions, spans = obs.evaluate(self.masks)
        best = int(np.argmin(spans))
        return Decision(self.masks[best], fractions[best])

    def jax_policy(self) -> JaxPolicy:
        return JaxPolicy(optimal_decide)
