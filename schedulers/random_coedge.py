"""`random` (RandCoEdge): the local server plus one uniformly drawn collaborator.

A draw equal to the arrival BS means "local only" (reference spec §4). The pair's
fractions come from the scenario's allocation rule (CWA by default) on the true state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mecsim.backends.kernel.shape import JaxPolicy, KernelContext, KernelTask
from mecsim.scheduling import Decision, Observation, Scheduler, SlotObservation


def random_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """The kernel form. Its draws come from the task's JAX key (the seed's scheduler stream, episode,
    slot, position), so they differ from the NumPy stream of the Python path."""
    other = jax.random.randint(key, (), 0, ctx.n_bs)
    eye = jnp.eye(ctx.n_bs, dtype=task.wait.dtype)
    subset = jnp.maximum(eye[task.bs], eye[other])
    return subset, ctx.allocate(task, subset)


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

    def jax_policy(self) -> JaxPolicy:
        return JaxPolicy(random_decide)
