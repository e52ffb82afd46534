"""The soft actor-critic schedulers (spec §6): the learner of `mecsim.learning.sac` on the SimPy path,
and its JAX form for the compiled kernel.

* `ddrl-ats` — DDRL-ATS / DEdgeAI's LAD-TS: each task goes whole to one ES, chosen by the
  diffusion policy started from the latent action memory;
* `d2sac-ts` — the same with a Gaussian start (D2SAC);
* `sac-ts` — the same learner with an MLP actor;
* `dqn-ts` — DEdgeAI's DQN baseline on the same state and transitions (`mecsim.learning.dqn_ts`);
* `ddrl-amsa` — DDRL-AMSA: the diffusion policy picks a subset of ESs (any of the 2^B − 1)
  and the scenario's allocation rule splits the task, as AMCoEdge does with its DQN.

The task-scheduling ones see s = [d, w, Q(t)] (DEdgeAI's state); `ddrl-amsa` sees AMCoEdge's
[d, Q(t)]. All decide a whole slot at once (the policy depends on the start-of-slot
backlog only), store the slot's transitions and update every agent once per slot, with
the PRNG keys the kernel derives (`mecsim.backends.kernel.scan.policy_key`), so both
paths take the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from mecsim.backends.kernel.scan import PREPARE_KEY, task_key
from mecsim.backends.kernel.shape import JaxPolicy, KernelContext, KernelTask, SlotView
from mecsim.jaxconfig import jit, x64
from mecsim.learning.config import LearnerConfig
from mecsim.learning.dqn_ts import DQNTS, DQNTSConfig
from mecsim.learning.heads import AllSubsets
from mecsim.learning.sac import SAC, SACConfig, SACState, SlotEntries
from mecsim.scheduling import (
    Decision,
    Observation,
    Scheduler,
    SchedulerError,
    SlotFeedback,
    SlotObservation,
    require_subset_enumeration,
)

from .learner_plugin import LearnerPlugin, bucket, padded, step_one_replica


def _entries(valid, bs, task, size, density) -> SlotEntries:
    return SlotEntries(valid, bs, task, jnp.stack([size, size * density], axis=-1))


def _act_in_slot(sac: SAC, params, episode_key, t, backlog, entries: SlotEntries, explore: bool):
    return sac.act_slot(params, task_key(episode_key, t, PREPARE_KEY), backlog, entries, t, explore)


_act = jit(_act_in_slot, static_argnums=(0, 6))
_store = jit(SAC.store_slot, static_argnums=(0,))


# -- the kernel forms --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SACPolicy:
    """``prepare`` acts for a whole slot; ``decide`` turns the action into a subset and fractions."""

    sac: SAC
    subsets: bool  # actions index subsets (allocation by the rule) rather than single servers
    explore: bool = False

    def prepare(self, params, key, state, slot: SlotView, ctx: KernelContext):
        entries = _entries(slot.valid, slot.bs, slot.task, slot.size, slot.density)
        actions, probs = self.sac.act_slot(params, key, state.backlog, entries, slot.slot, self.explore)
        return {"action": actions, "probs": probs}

    def decide(self, params, key, state, task: KernelTask, ctx: KernelContext):
        action = task.prepared["action"]
        if self.subsets:
            subset = AllSubsets(ctx.n_bs).subsets(action[None, None], None)[0].astype(task.wait.dtype)
            return subset, ctx.allocate(task, subset), task.prepared
        subset = jax.nn.one_hot(action, ctx.n_bs, dtype=task.wait.dtype)
        return subset, subset, task.prepared


@dataclass(frozen=True)
class SACKernelLearner:
    """What the kernel's training loop (`mecsim.backends.kernel.training`) needs of a SAC learner."""

    sac: SAC
    subsets: bool

    def policy(self) -> SACPolicy:
        return SACPolicy(self.sac, self.subsets, explore=True)

    def policy_params(self, state: SACState, learn_step):
        params = self.sac.policy_params(state)
        return params, jax.tree.map(lambda _: 0, params)

    def grid(self, traces) -> np.ndarray:
        """[size, work] of every task slot, (R, slots, B, N, 2)."""
        return np.stack(
            [
                np.stack([tr.sizes, tr.sizes * np.broadcast_to(tr.densities, tr.sizes.shape)], -1)
                for tr in traces
            ]
        )

    def observe(self, state: SACState, out, slot_tasks, backlog, next_backlog, grid, next_first, t, n_tasks):
        entries = _entries(
            slot_tasks.valid, slot_tasks.bs, slot_tasks.task, slot_tasks.size, slot_tasks.density
        )
        return self.sac.store_slot(
            state,
            out.aux["action"],
            out.aux["probs"],
            out.reward,
            entries,
            backlog,
            next_backlog,
            grid,
            next_first,
            t,
            n_tasks,
        )

    def due(self, slot_step):
        return slot_step > 0  # one update per slot (each agent once its buffer is filled enough)

    def update(self, state: SACState, learn_step) -> SACState:
        return self.sac.update(state, learn_step)


# -- the plugin ------------------------------------------------------------------------------------
class SACScheduler(LearnerPlugin, Scheduler):
    """Per-BS discrete SAC agents. Subclasses set ``config_class`` (defaults) and ``subsets``."""

    name = "sac"
    config_class: ClassVar[type[LearnerConfig]] = SACConfig
    learner_class: ClassVar[type[SAC]] = SAC
    subsets: ClassVar[bool] = False
    observation: ClassVar[str] = "dedgeai"
    # the learner state holds per-task-slot arrays (the latent action memory X[t, b, n]), so replicas
    # with different N cannot be stacked into one batch (`mecsim.sweep.planning.batch_key`)
    state_depends_on_tasks_per_slot: ClassVar[bool] = True
    # On one core a seed-episode costs no less in batches of 8 than of 4 (docs/ddrl.md#speed), so a sweep
    # splits the seeds over its workers rather than training them all on one (`planning.batch_limit`).
    sweep_batch_cells: ClassVar[int] = 4

    def __init__(self, scenario, rng: np.random.Generator | None = None, **options: Any):
        super().__init__(scenario, rng)
        self.n_bs = scenario.n_bs
        self.n_tasks = scenario.tasks_per_slot
        if self.subsets:
            require_subset_enumeration(self.name, self.n_bs)
        self.training = True
        self._setup(self.config_class.from_options(self.name, options))

    @property
    def n_actions(self) -> int:
        return 2**self.n_bs - 1 if self.subsets else self.n_bs

    def _setup(self, config: SACConfig) -> None:
        self.config = config
        sc = self.scenario
        self.sac = self.learner_class(
            config, self.n_bs, self.n_actions, self.n_tasks, sc.slots, self.observation
        )
        self.state: SACState = self.sac.init(self.learner_seed)
        self.slot_step = 0
        self.learn_step = 0
        self._acted: list[tuple] = []  # this slot's (actions, probs)
        self._key_of: tuple[int, np.ndarray | None] = (-1, None)
        self._masks = AllSubsets(self.n_bs) if self.subsets else None

    # -- deciding ------------------------------------------------------------------------------------
    def decide_slot(self, obs: SlotObservation) -> Decision:
        n = len(obs)
        width = bucket(n)
        entries = _entries(
            np.arange(width) < n,
            padded(obs.bs.astype(np.int32), width),
            padded(obs.task.astype(np.int32), width),
            padded(np.asarray(obs.size, float), width, 1.0),
            padded(np.asarray(obs.density, float), width, 1.0),
        )
        with x64():
            actions, probs = _act(
                self.sac,
                self.sac.policy_params(self.state),
                self._episode_key(obs.episode),
                np.int64(obs.slot),
                np.asarray(obs.backlog, float),
                entries,
                self.training,
            )
            actions, probs = np.asarray(actions)[:n], np.asarray(probs)[:n]
        if self.training:
            self._acted.append((actions, probs))
        if self.subsets:
            with x64():
                subsets = np.asarray(self._masks.subsets(actions[:, None], None))
            return Decision(subsets, None)
        onehot = np.eye(self.n_bs)[actions]
        return Decision(onehot, onehot)

    def decide(self, obs: Observation) -> Decision:
        slot = SlotObservation.of_task(obs)
        decision = self.decide_slot(slot)
        return Decision(decision.subset[0], None if decision.fractions is None else decision.fractions[0])

    # -- learning ------------------------------------------------------------------------------------
    def on_slot_end(self, feedback: SlotFeedback) -> None:
        acted, self._acted = self._acted, []
        if not self.training:
            return
        n = len(feedback.bs)
        if n:
            actions = np.concatenate([a for a, _ in acted])
            probs = np.concatenate([p for _, p in acted])
            if actions.shape[0] != n:
                raise SchedulerError(
                    f"scheduler {self.name!r}: slot {feedback.slot} fed back {n} tasks, decided {actions.shape[0]}"
                )
            self._store(feedback, actions, probs)
        self.slot_step += 1
        with x64():
            self.state = step_one_replica(self.sac.update, self.state, np.int64(self.learn_step))
        self.learn_step += 1

    def _store(self, fb: SlotFeedback, actions, probs) -> None:
        n, width = len(fb.bs), bucket(len(fb.bs))
        size, density = np.asarray(fb.size, float), np.asarray(fb.density, float)
        entries = _entries(
            np.arange(width) < n,
            padded(np.asarray(fb.bs, np.int32), width),
            padded(np.asarray(fb.task, np.int32), width),
            padded(size, width, 1.0),
            padded(density, width, 1.0),
        )
        grid = np.zeros((self.n_bs, self.n_tasks, 2))
        grid[fb.bs, fb.task] = np.stack([size, size * density], -1)
        with x64():
            self.state = _store(
                self.sac,
                self.state,
                padded(actions.astype(np.int32), width),
                padded(probs.astype(np.float32), width),
                padded(np.asarray(fb.reward, float), width),
                entries,
                np.asarray(fb.backlog, float),
                np.asarray(fb.next_backlog, float),
                grid,
                self._next_first(fb),
                np.int64(fb.slot),
                np.float64(self.n_tasks),
            )

    @staticmethod
    def _next_first(fb: SlotFeedback) -> np.ndarray:
        """[size, work] of each BS's first task slot in the next slot, (B, 2)."""
        sizes = np.asarray(fb.next_sizes, float)[:, 0]
        return np.stack([sizes, sizes * np.asarray(fb.next_densities, float)[:, 0]], -1)

    def train(self, flag: bool = True) -> None:
        self.training = bool(flag)
        self._acted = []

    # -- the kernel ----------------------------------------------------------------------------------
    def jax_policy(self) -> JaxPolicy | None:
        if self.training:
            return None
        policy = SACPolicy(self.sac, self.subsets, explore=False)
        return JaxPolicy(policy.decide, self.sac.policy_params(self.state), prepare=policy.prepare)

    def kernel_learner(self) -> SACKernelLearner:
        return SACKernelLearner(self.sac, self.subsets)

    # -- checkpoints ---------------------------------------------------------------------------------
    def _nets(self) -> dict[str, Any]:
        return {"nets": self.state.nets, "opt": self.state.opt, "latent": self.state.latent}

    def _restore(self, nets: dict[str, Any]) -> None:
        self.state = self.state._replace(nets=nets["nets"], opt=nets["opt"], latent=nets["latent"])


# -- the registered schedulers ---------------------------------------------------------------------
class LADConfig(SACConfig):
    """DDRL-ATS / LAD-TS (spec §6.2): the `SACConfig` defaults, diffusion actor from the latent memory."""


class DDRLATSScheduler(SACScheduler):
    name = "ddrl-ats"
    config_class = LADConfig


class D2SACConfig(SACConfig):
    """D2SAC-TS: the diffusion actor started from N(0, I) (the AGOD code's chain)."""

    start: Literal["latent", "gaussian"] = "gaussian"
    """the chain's start: 'gaussian' (D2SAC) or 'latent'"""


class D2SACScheduler(SACScheduler):
    name = "d2sac-ts"
    config_class = D2SACConfig


class SACTSConfig(SACConfig):
    """SAC-TS (spec §6.3): an MLP actor 22 → 20 → 20 → 20 with a softmax; the rest as LAD-TS."""

    actor: Literal["diffusion", "mlp"] = "mlp"
    """'mlp' (SAC-TS) or 'diffusion'"""


class SACTSScheduler(SACScheduler):
    name = "sac-ts"
    config_class = SACTSConfig


class DDRLAMSAScheduler(SACScheduler):
    """DDRL-AMSA: the diffusion policy picks a server subset; the allocation rule splits the task."""

    name = "ddrl-amsa"
    config_class = LADConfig
    subsets = True
    observation = "amcoedge"


class DQNTSScheduler(SACScheduler):
    """DQN-TS (spec §6.3): ε = 0.01 random actions, a hard target copy every 200 updates."""

    name = "dqn-ts"
    config_class = DQNTSConfig
    learner_class = DQNTS
