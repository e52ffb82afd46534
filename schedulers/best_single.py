"""`best-single`: the whole task on the one edge server with the smallest expected make-span."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mecsim.backends.kernel.shape import JaxPolicy, KernelContext, KernelTask
from mecsim.scheduling import Decision, Observation, Scheduler


def best_single_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """The kernel form: the single server with the smallest make-span, ties to the lowest index."""
    singles = jnp.eye(ctx.n_bs, dtype=task.wait.dtype)
    fractions, spans = ctx.evaluate(task, masks=singles)
    best = jnp.argmin(spans)
    return singles[best], fractions[best]


class BestSingleScheduler(Scheduler):
    name = "best-single"

    def __init__(self, scenario, rng=None, **options):
        super().__init__(scenario, rng, **options)
        self.masks = np.eye(scenario.n_bs)

    def decide(self, obs: Observation) -> Decision:
        _, spans = obs.evaluate(self.masks)
        best = int(np.argmin(spans))
        return Decision(self.masks[best], self.masks[best])

    def jax_policy(self) -> JaxPolicy:
        return JaxPolicy(best_single_decide)
