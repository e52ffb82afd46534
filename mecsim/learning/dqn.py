"""DQN per base station, as pure JAX functions over a learner-state pytree (reference spec §3–§5).

One agent per BS, no parameter sharing; the B agents' parameters are stacked along a
leading axis and vmapped. `DQN` is the static part (config, action head, B: hashable, so
it keys compiled functions); `DQNState` the per-replica numbers. The SimPy path calls these
functions one slot at a time (`schedulers.dqn`), the compiled kernel inside ``lax.scan``,
vmapped over replicas (`mecsim.backends.kernel.training`): both take the same steps.

* acting (`DQN.act`): once per slot, each agent's Q-network on its own BS's N task slots
  [d, Q(t)]; greedy, or in training ε-greedy in the reference's *inverted* convention:
  ``greedy_prob`` is the probability of the greedy action, rising from 0 by 0.001 per
  learn up to 0.99 (`DQN.greedy_prob`);
* transitions (`DQN.store_slot`, spec §3): the next state of a task is the next task slot
  of the same BS (maybe empty, d = 0) with the pre-update Q(t); for the last task slot,
  the next slot's first task with Q(t+1); slot 0's are skipped;
* learning (`DQN.learn`): when the slot counter passes ``learn_start`` and every
  ``learn_every`` slots (`DQN.due`); a hard target copy when ``learn_step %
  replace_target_iter == 0`` (checked before the update, so the first learn copies); one
  minibatch per agent sampled with replacement; the reference loss `td_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from pydantic import Field

from ..streams import stream_seed
from . import replay as replay_buffer
from .config import LearnerConfig
from .heads import ActionHead
from .networks import MLP, normal_initialiser
from .replay import Replay
from .targets import hard_update


class DQNConfig(LearnerConfig):
    """Hyper-parameters of the DQN schedulers; the defaults are AdaDQN's reference values (spec §3)."""

    hidden: tuple[int, ...] = Field((20, 20, 20), min_length=1)
    """widths of the hidden ReLU layers"""
    init_std: float = Field(0.3, ge=0)
    """weights ~ N(0, init_std)"""
    bias_init: float = 0.1
    """every bias starts at this value"""
    lr: float = Field(1e-3, gt=0)
    """Adam learning rate (β1 0.9, β2 0.999, ε 1e-8)"""
    gamma: float = Field(0.9, ge=0, le=1)
    """discount factor"""
    memory_size: int = Field(500, ge=1)
    """replay ring buffer size per agent"""
    batch_size: int = Field(32, ge=1)
    """minibatch size per agent and learn"""
    replace_target_iter: int = Field(100, ge=1)
    """hard target copy when learn_step % replace_target_iter == 0"""
    learn_start: int = Field(200, ge=0)
    """learn when the slot counter > learn_start ..."""
    learn_every: int = Field(10, ge=1)
    """... and slot counter % learn_every == 0"""
    greedy_start: float = Field(0.0, ge=0, le=1)
    """probability of the greedy action before the first learn (inverted ε)"""
    greedy_increment: float = 0.001
    """added to the greedy probability after every learn"""
    greedy_max: float = Field(0.99, ge=0, le=1)
    """the greedy probability's ceiling"""
    observation: Literal["reference", "rich"] = "reference"
    """'reference': [d, Q(t)] with the start-of-slot backlog; 'rich': [d, current backlog, tx backlog, density]"""
    skip_first_slot: bool = True
    """do not store transitions of slot 0 (the reference: its queues are empty)"""
    learner_seed: int = Field(-1, ge=-1)
    """seed of the network init, replay sampling and exploration; -1: the scenario's seed. Another value
    varies the learner's randomness while the arrival traces stay the same"""

    def model_post_init(self, __context: Any) -> None:
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"hidden = {list(self.hidden)}: every width must be >= 1")


class BaselineDQNConfig(DQNConfig):
    """The DQN of the AMCoEdge repository's baselines (DRLCoEdge, the SMCoEdge copy; spec §4): two hidden
    layers, N(0, 0.5) weights, memory 1024, a target copy every 200 learns; the rest as AdaDQN."""

    hidden: tuple[int, ...] = Field((20, 20), min_length=1)
    """widths of the hidden ReLU layers"""
    init_std: float = Field(0.5, ge=0)
    """weights ~ N(0, init_std)"""
    memory_size: int = Field(1024, ge=1)
    """replay ring buffer size per agent"""
    replace_target_iter: int = Field(200, ge=1)
    """hard target copy when learn_step % replace_target_iter == 0"""


class DQNState(NamedTuple):
    """One replica's learner: every agent's nets, Adam states and replay buffer, and its sampling key."""

    params: Any
    target: Any
    opt_state: Any
    replay: Replay
    key: Any  # replay sampling key (folded with the learn step)


class SlotTasks(NamedTuple):
    """One slot's task entries (arrays of a common width): the tasks first, in decision order."""

    valid: Any
    bs: Any
    task: Any
    size: Any


def td_loss(params, target_params, apply, states, actions, rewards, next_states, gamma):
    """Reference DQN loss for one agent: the mean over the whole (batch × n_actions) matrix of
    (q_target − q_eval)², q_target = q_eval with each taken action's entry replaced (no terminal
    handling, hence the 1/n_actions scaling). ``actions`` (batch, k): the j-th taken action gets
    r + γ·(j-th largest Q_target(s')); k = 1 is the usual target r + γ·max Q_target(s')."""
    q_eval = apply(params, states)
    q_next = apply(target_params, next_states)
    k = actions.shape[-1]
    # the k largest, descending (a sort's values exactly; XLA's CPU sort calls its comparator per element
    # pair and cost about a tenth of a training run)
    best_next = jnp.max(q_next, axis=-1, keepdims=True) if k == 1 else jax.lax.top_k(q_next, k)[0]
    y = rewards[:, None] + gamma * best_next
    rows = jnp.arange(q_eval.shape[0])[:, None]
    q_target = jax.lax.stop_gradient(q_eval.at[rows, actions].set(y))
    return jnp.mean((q_target - q_eval) ** 2)


@dataclass(frozen=True)
class DQN:
    """The static part of B per-BS DQN agents: config and action head (hashable)."""

    config: DQNConfig
    head: ActionHead

    @property
    def n_agents(self) -> int:
        return self.head.n_bs

    @property
    def n_actions(self) -> int:
        return self.head.n_actions

    @property
    def rich(self) -> bool:
        return self.config.observation == "rich"

    @property
    def n_features(self) -> int:
        return 2 + 2 * self.n_agents if self.rich else 1 + self.n_agents

    @cached_property
    def network(self) -> MLP:
        return MLP(tuple(self.config.hidden), self.n_actions)

    @cached_property
    def optimizer(self):
        return optax.adam(float(self.config.lr))

    def apply(self, params, x):
        """One agent's Q-values for rows ``x``."""
        return self.network.apply({"params": params}, x)

    # -- state ---------------------------------------------------------------------------------------
    def init(self, seed: int) -> DQNState:
        """Initial state (host arrays): nets from the seed's "jax" streams (one per agent), empty buffers."""
        cfg = self.config
        keys = np.stack(
            [
                np.asarray(jax.random.PRNGKey(stream_seed(seed, "jax", agent)))
                for agent in range(self.n_agents)
            ]
        )
        init = normal_initialiser(
            tuple(cfg.hidden),
            self.n_actions,
            float(cfg.init_std),
            float(cfg.bias_init),
            self.n_features,
            float(cfg.lr),
        )
        params, target, opt_state = init(keys)
        return DQNState(
            params=params,
            target=target,
            opt_state=opt_state,
            replay=replay_buffer.empty(self.n_agents, cfg.memory_size, self.n_features, self.head.width),
            key=np.asarray(jax.random.PRNGKey(stream_seed(seed, "replay", 1 << 20))),
        )

    # -- acting --------------------------------------------------------------------------------------
    def greedy_prob(self, learn_step):
        """Probability of the greedy action after ``learn_step`` learns (inverted ε, spec §3)."""
        cfg = self.config
        return jnp.minimum(cfg.greedy_start + cfg.greedy_increment * learn_step, cfg.greedy_max)

    def q_grid(self, net, backlog, slot: SlotTasks, n_tasks: int):
        """Q (width, A) of the slot's entries: each agent on its own BS's N task slots, [d, Q(t)], then
        picked per entry (B x N rows instead of B agents x width entries)."""
        n_bs = self.n_agents
        rows = jnp.where(slot.valid, slot.bs, n_bs)  # padding: out of range, dropped
        sizes = (
            jnp.zeros((n_bs, n_tasks), jnp.float32)
            .at[rows, slot.task]
            .set(slot.size.astype(jnp.float32), mode="drop")
        )
        queues = jnp.broadcast_to(backlog.astype(jnp.float32), (n_bs, n_tasks, n_bs))
        x = jnp.concatenate([sizes[..., None], queues], axis=-1)  # (B, N, F)
        q_grid = jax.vmap(self.apply)(net, x)  # (B, N, A)
        return q_grid[slot.bs, slot.task]

    def choose(self, q, key, greedy_prob, explore: bool):
        """Action indices (n, width) from Q (n, A): greedy, or ε-greedy (inverted ε) when ``explore``."""
        n = q.shape[0]
        k_explore, k_random = jax.random.split(key)
        actions = self.head.greedy(q)
        if explore:
            random = self.head.random(k_random, n)
            explore_mask = (
                jax.random.uniform(k_explore, (n,)) >= greedy_prob
            )  # reference: uniform < ε → greedy
            actions = jnp.where(explore_mask[:, None], random, actions)
        return actions

    def act(self, net, key, backlog, slot: SlotTasks, greedy_prob, n_tasks: int, explore: bool):
        """Every decision of one slot (reference observation): subsets (width, B) and actions (width, k)."""
        q = self.q_grid(net, backlog, slot, n_tasks)
        actions = self.choose(q, key, greedy_prob, explore)
        return self.head.subsets(actions, slot.bs), actions.astype(jnp.int32)

    def act_rows(self, net, key, x, agents, greedy_prob, explore: bool):
        """Decisions for feature rows ``x`` (n, F), each by its own agent (the rich observation)."""
        q_all = jax.vmap(self.apply, in_axes=(0, None))(net, x.astype(jnp.float32))  # (agents, n, A)
        q = q_all[agents, jnp.arange(x.shape[0])]
        actions = self.choose(q, key, greedy_prob, explore)
        return self.head.subsets(actions, agents), actions.astype(jnp.int32)

    # -- transitions -------------------------------------------------------------------------------
    def store_slot(
        self,
        state: DQNState,
        actions,
        rewards,
        slot: SlotTasks,
        backlog,
        next_backlog,
        grid,
        next_first,
        t,
        n_tasks,
    ) -> DQNState:
        """Store slot ``t``'s transitions (spec §3) in each agent's ring buffer, in (BS, task slot) order.

        ``grid`` (B, N'): the slot's task sizes (0 = empty task slot), N' >= this replica's
        ``n_tasks`` (a padded group's N); ``next_first`` (B,): each BS's first size in slot t+1.
        """
        valid = slot.valid & ~(self.config.skip_first_slot & (t == 0))
        bs, n = slot.bs, slot.task
        n_bs = backlog.shape[0]
        last = n == n_tasks.astype(n.dtype) - 1
        next_size = jnp.where(last, next_first[bs], grid[bs, jnp.minimum(n + 1, grid.shape[-1] - 1)])
        next_q = jnp.where(last[:, None], next_backlog[None, :], backlog[None, :])
        f32 = jnp.float32
        s = jnp.concatenate(
            [slot.size[:, None], jnp.broadcast_to(backlog, (bs.shape[0], n_bs))], axis=1
        ).astype(f32)
        s2 = jnp.concatenate([next_size[:, None], next_q], axis=1).astype(f32)
        return state._replace(replay=replay_buffer.add(state.replay, bs, valid, s, actions, rewards, s2))

    def store_rows(self, state: DQNState, agents, valid, states, actions, rewards, next_states) -> DQNState:
        """Store transitions built elsewhere (the rich observation's rule), grouped by agent."""
        return state._replace(
            replay=replay_buffer.add(state.replay, agents, valid, states, actions, rewards, next_states)
        )

    # -- learning ------------------------------------------------------------------------------------
    def due(self, slot_step):
        """Whether the slot counter calls for a learn (after it was incremented for this slot)."""
        cfg = self.config
        return (slot_step > cfg.learn_start) & (slot_step % cfg.learn_every == 0)

    def learn(self, state: DQNState, learn_step) -> DQNState:
        """One minibatch update of every agent that has data, after the target copy when due."""
        copy = learn_step % self.config.replace_target_iter == 0
        target = hard_update(copy, state.params, state.target)
        key = jax.random.fold_in(state.key, learn_step)
        (s, a, r, s2), active = replay_buffer.sample(state.replay, key, self.config.batch_size)
        params, opt_state, _ = jax.vmap(self._update_agent)(
            state.params, target, state.opt_state, s, a, r, s2, active
        )
        return state._replace(params=params, target=target, opt_state=opt_state)

    def _update_agent(self, params, target, opt_state, s, a, r, s2, active):
        loss, grads = jax.value_and_grad(td_loss)(
            params, target, self.apply, s, a, r, s2, float(self.config.gamma)
        )
        updates, new_state = self.optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state), loss
