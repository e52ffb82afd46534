"""`local`: every task runs entirely on the edge server of the BS where it arrives."""

from __future__ import annotations

import jax
import numpy as np

from mecsim.backends.kernel.shape import JaxPolicy, KernelContext, KernelTask
from mecsim.scheduling import Decision, Observation, Scheduler, SlotObservation


def local_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """The kernel form: the whole task on the arrival BS's own server."""
    onehot = jax.nn.one_hot(task.bs, ctx.n_bs, dtype=task.wait.dtype)
    return onehot, onehot


class LocalScheduler(Scheduler):
    name = "local"

    def decide(self, obs: Observation) -> Decision:
        return Decision.to(obs.bs, obs.n_servers)

    def decide_slot(self, obs: SlotObservation) -> Decision:
        onehot = np.eye(obs.scenario.n_bs)[obs.bs]
        return Decision(onehot, onehot)

    def jax_policy(self) -> JaxPolicy:
        return JaxPolicy(local_decide)
