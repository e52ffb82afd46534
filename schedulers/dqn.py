"""The DQN schedulers' plugin (AMCoEdge, DRLCoEdge, SMCoEdge): the learner of `mecsim.learning.dqn`
on the SimPy path, and its JAX form for the compiled kernel.

Subclasses choose the hyper-parameters (``config_class``) and the action space (``make_head``).
Everything else is shared, and written once: the SimPy path calls the learner's jitted
functions one slot at a time, with the same PRNG keys the kernel folds in per episode and
slot (`mecsim.backends.kernel.scan.policy_key`); `DQNKernelLearner` hands the same functions
to the kernel's training loop.

Decisions are subsets (``Decision(subset, None)``): the delay model allocates with the
scenario's rule (CWA or HECWA) on the true state. The reference observation decides a
whole slot at once (``decide_slot``); the rich one (``--option observation=rich``) needs
per-task ``decide`` and trains on the SimPy path only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mecsim.backends.kernel.scan import PREPARE_KEY, task_key
from mecsim.backends.kernel.shape import JaxPolicy, KernelContext, KernelTask, SlotView
from mecsim.jaxconfig import jit, x64
from mecsim.learning.dqn import DQN, DQNConfig, DQNState, SlotTasks
from mecsim.learning.heads import ActionHead
from mecsim.scheduling import Decision, Observation, Scheduler, SchedulerError, SlotFeedback, SlotObservation

from .learner_plugin import LearnerPlugin, bucket, padded, step_one_replica


def _act_in_slot(
    dqn: DQN, net, episode_key, slot, backlog, tasks: SlotTasks, learn_step, n_tasks: int, explore: bool
):
    """`DQN.act` for one slot, with the slot's key and the greedy probability derived as the kernel derives them."""
    key = task_key(episode_key, slot, PREPARE_KEY)
    return dqn.act(net, key, backlog, tasks, dqn.greedy_prob(learn_step), n_tasks, explore)


# The learner's functions, compiled once per (learner, shape); `self` (a hashable DQN) is static.
_act = jit(_act_in_slot, static_argnums=(0, 7, 8))
_act_rows = jit(DQN.act_rows, static_argnums=(0, 6))
_store_slot = jit(DQN.store_slot, static_argnums=(0,))
_store_rows = jit(DQN.store_rows, static_argnums=(0,))


# -- the kernel forms --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DQNPolicy:
    """The DQN's decisions in the kernel's form: ``prepare`` acts for a whole slot, ``decide`` allocates.

    params: ``net`` (every agent's eval-net parameters, stacked) and ``greedy_prob`` (a scalar).
    """

    dqn: DQN
    explore: bool = False

    def prepare(self, params, key, state, slot: SlotView, ctx: KernelContext):
        tasks = SlotTasks(slot.valid, slot.bs, slot.task, slot.size)
        subsets, actions = self.dqn.act(
            params["net"], key, state.backlog, tasks, params["greedy_prob"], ctx.tasks_per_slot, self.explore
        )
        return {"subset": subsets, "action": actions}

    def decide(self, params, key, state, task: KernelTask, ctx: KernelContext):
        subset = task.prepared["subset"]
        return subset, ctx.allocate(task, subset), task.prepared["action"]


@dataclass(frozen=True)
class DQNKernelLearner:
    """What the kernel's training loop (`mecsim.backends.kernel.training`) needs of a DQN learner."""

    dqn: DQN

    def policy(self) -> DQNPolicy:
        return DQNPolicy(self.dqn, explore=True)

    def policy_params(self, state: DQNState, learn_step):
        """The exploring policy's params and their vmap axes (nets per replica, one greedy probability)."""
        return {"net": state.params, "greedy_prob": self.dqn.greedy_prob(learn_step)}, {
            "net": 0,
            "greedy_prob": None,
        }

    def observe(self, state: DQNState, out, slot_tasks, backlog, next_backlog, grid, next_first, t, n_tasks):
        tasks = SlotTasks(slot_tasks.valid, slot_tasks.bs, slot_tasks.task, slot_tasks.size)
        return self.dqn.store_slot(
            state, out.aux, out.reward, tasks, backlog, next_backlog, grid, next_first, t, n_tasks
        )

    def due(self, slot_step):
        return self.dqn.due(slot_step)

    def update(self, state: DQNState, learn_step) -> DQNState:
        return self.dqn.learn(state, learn_step)


# -- the plugin ------------------------------------------------------------------------------------
class DQNScheduler(LearnerPlugin, Scheduler):
    """A per-BS DQN scheduler. Subclasses define ``config_class`` and ``make_head``."""

    name = "dqn"
    config_class: ClassVar[type[DQNConfig]] = DQNConfig

    def __init__(self, scenario, rng: np.random.Generator | None = None, **options: Any):
        super().__init__(scenario, rng)
        self.n_bs = scenario.n_bs
        self.n_tasks = scenario.tasks_per_slot
        self.training = True
        self._setup(self.config_class.from_options(self.name, options))

    def make_head(self, config: DQNConfig) -> ActionHead:
        """The action space for this scenario (subclasses); refuse configs that do not fit it."""
        raise NotImplementedError

    def _setup(self, config: DQNConfig) -> None:
        self.config = config
        self.head = self.make_head(config)
        self.dqn = DQN(config, self.head)
        self.state: DQNState = self.dqn.init(self.learner_seed)
        self.slot_step = 0
        self.learn_step = 0
        # the rich observation decides task by task; the reference one a slot at a time
        self.decide_slot = None if self.dqn.rich else self._decide_slot
        self._recorded: list[np.ndarray] = []  # this slot's actions (reference observation)
        self._rows: list[tuple] = []  # this slot's (bs, task, state, action) (rich observation)
        self._pending: dict[int, tuple] = {}  # rich: BS -> (s, a, r) awaiting its next state
        self._key_of: tuple[int, np.ndarray | None] = (-1, None)  # (episode, its policy key)

    @property
    def greedy_prob(self) -> float:
        with x64():
            return float(self.dqn.greedy_prob(np.int64(self.learn_step)))

    # -- deciding ------------------------------------------------------------------------------------
    def _decide_slot(self, obs: SlotObservation) -> Decision:
        n = len(obs)
        width = bucket(n)
        tasks = SlotTasks(
            valid=np.arange(width) < n,
            bs=padded(obs.bs.astype(np.int32), width),
            task=padded(obs.task.astype(np.int32), width),
            size=padded(obs.size, width, 1.0),
        )
        with x64():
            subsets, actions = _act(
                self.dqn,
                self.state.params,
                self._episode_key(obs.episode),
                np.int64(obs.slot),
                np.asarray(obs.backlog, float),
                tasks,
                np.int64(self.learn_step),
                self.n_tasks,
                self.training,
            )
            subsets, actions = np.asarray(subsets)[:n], np.asarray(actions)[:n]
        if self.training:
            self._recorded.append(actions)
        return Decision(subsets, None)

    def decide(self, obs: Observation) -> Decision:
        if not self.dqn.rich:
            return self._decide_one_of_slot(obs)
        x = np.concatenate([[obs.size], obs.current_backlog, obs.tx_backlog, [obs.density]])[None].astype(
            np.float32
        )
        slot_key = task_key(jnp.asarray(self._episode_key(obs.episode)), obs.slot, PREPARE_KEY)
        key = jax.random.fold_in(slot_key, obs.bs * self.n_tasks + obs.task)
        with x64():
            subsets, actions = _act_rows(
                self.dqn,
                self.state.params,
                key,
                x,
                np.array([obs.bs], np.int32),
                self.greedy_prob,
                self.training,
            )
            subsets, actions = np.asarray(subsets), np.asarray(actions)
        if self.training:
            self._rows.append((obs.bs, obs.task, x[0], actions[0]))
        return Decision(subsets[0], None)

    def _decide_one_of_slot(self, obs: Observation) -> Decision:
        """The reference observation asked task by task: a one-task slot."""
        slot = SlotObservation.of_task(obs)
        return Decision(self._decide_slot(slot).subset[0], None)

    # -- learning ------------------------------------------------------------------------------------
    def on_slot_end(self, feedback: SlotFeedback) -> None:
        if not self.training:
            self._clear()
            return
        if self.dqn.rich:
            self._store_rich(feedback)
        elif len(feedback.bs):
            self._store_reference(feedback)
        self._clear()
        self.slot_step += 1
        if bool(self.dqn.due(self.slot_step)):
            with x64():
                self.state = step_one_replica(self.dqn.learn, self.state, np.int64(self.learn_step))
            self.learn_step += 1

    def _clear(self) -> None:
        self._recorded, self._rows = [], []

    def _store_reference(self, fb: SlotFeedback) -> None:
        n = len(fb.bs)
        actions = (
            np.concatenate(self._recorded) if self._recorded else np.zeros((0, self.head.width), np.int32)
        )
        if actions.shape[0] != n:
            raise SchedulerError(
                f"scheduler {self.name!r}: slot {fb.slot} fed back {n} tasks, decided {actions.shape[0]}"
            )
        width = bucket(n)
        tasks = SlotTasks(
            np.arange(width) < n,
            padded(np.asarray(fb.bs, np.int32), width),
            padded(np.asarray(fb.task, np.int32), width),
            padded(np.asarray(fb.size, float), width, 1.0),
        )
        grid = np.zeros((self.n_bs, self.n_tasks))
        grid[fb.bs, fb.task] = fb.size  # this slot's full size grid (0 = empty task slot)
        with x64():
            self.state = _store_slot(
                self.dqn,
                self.state,
                padded(actions.astype(np.int32), width),
                padded(np.asarray(fb.reward, float), width),
                tasks,
                np.asarray(fb.backlog, float),
                np.asarray(fb.next_backlog, float),
                grid,
                np.asarray(fb.next_sizes, float)[:, 0],
                np.int64(fb.slot),
                np.float64(self.n_tasks),
            )

    def _store_rich(self, fb: SlotFeedback) -> None:
        """Rich observation: a task's next state is the next observation at the same BS (later in the
        slot, or the BS's first task of a later slot)."""
        reward_of = {(int(b), int(k)): float(r) for b, k, r in zip(fb.bs, fb.task, fb.reward)}
        skip = self.config.skip_first_slot and fb.slot == 0
        transitions = []  # (agent, s, a, r, s2)
        for b in sorted({row[0] for row in self._rows}):
            rows = sorted((r for r in self._rows if r[0] == b), key=lambda r: r[1])
            if b in self._pending:
                ps, pa, pr = self._pending.pop(b)
                transitions.append((b, ps, pa, pr, rows[0][2]))
            if not skip:
                for (_, k, s, a), (_, _, s2, _) in zip(rows[:-1], rows[1:]):
                    transitions.append((b, s, a, reward_of[(b, k)], s2))
                last = rows[-1]
                self._pending[b] = (last[2], last[3], reward_of[(b, last[1])])
        if not transitions:
            return
        n, width = len(transitions), bucket(len(transitions))
        agents, s, a, r, s2 = (np.array(col) for col in zip(*transitions))
        with x64():
            self.state = _store_rows(
                self.dqn,
                self.state,
                padded(agents.astype(np.int32), width),
                np.arange(width) < n,
                padded(s, width),
                padded(a.astype(np.int32), width),
                padded(r, width),
                padded(s2, width),
            )

    def on_episode_end(self, episode: int, metrics: dict[str, float]) -> None:
        self._pending.clear()
        self._clear()

    def train(self, flag: bool = True) -> None:
        self.training = bool(flag)
        self._pending.clear()
        self._clear()

    # -- the kernel ----------------------------------------------------------------------------------
    def jax_policy(self) -> JaxPolicy | None:
        """The greedy decisions in the compiled kernel's form, or None where they need this object's
        hooks (training: see `kernel_learner`; the rich observation)."""
        if self.training or self.dqn.rich:
            return None
        policy = DQNPolicy(self.dqn, explore=False)
        params = {"net": self.state.params, "greedy_prob": np.float64(self.greedy_prob)}
        return JaxPolicy(policy.decide, params, prepare=policy.prepare)

    def kernel_learner(self) -> DQNKernelLearner | None:
        """The learner for the kernel's training loop (None with the rich observation: SimPy path only)."""
        return None if self.dqn.rich else DQNKernelLearner(self.dqn)

    # -- checkpoints (`schedulers.learner_plugin`) -------------------------------------------------------
    @property
    def n_actions(self) -> int:
        return self.head.n_actions

    def _nets(self) -> dict[str, Any]:
        return {"params": self.state.params, "target": self.state.target, "opt_state": self.state.opt_state}

    def _restore(self, nets: dict[str, Any]) -> None:
        self.state = self.state._replace(
            params=nets["params"], target=nets["target"], opt_state=nets["opt_state"]
        )
