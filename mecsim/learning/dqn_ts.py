"""DQN-TS as DEdgeAI runs it (reference spec §6.3): per-BS DQN on the task-scheduling state.

The state, transitions, replay and update schedule are those of `mecsim.learning.sac` (the
reference's DQN-TS and LAD-TS share their environment and training loop); what differs:

* acting: ε-greedy with ε = 0.01 the probability of a uniformly random action (constant; the
  opposite of AMCoEdge's convention);
* the Q-network 22 → 20 → 20 → 20 (PyTorch initialisation), Adam 1e-4, γ = 0.95;
* the loss: MSE on the taken action against r + γ·max_a' Q_target(s', a');
* the target network: a hard copy every 200 updates of the agent, the first at its first update.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from pydantic import ConfigDict, Field

from ..streams import stream_seed
from . import replay as replay_buffer
from .config import LearnerConfig
from .networks import TorchMLP
from .sac import SAC, SACState, SlotEntries
from .targets import hard_update


class DQNTSConfig(LearnerConfig):
    """Hyper-parameters of DQN-TS; the defaults are DEdgeAI's reference values (spec §6.3–6.4)."""

    model_config = ConfigDict(allow_inf_nan=False)

    hidden: tuple[int, ...] = Field((20, 20), min_length=1)
    """widths of the hidden ReLU layers"""
    lr: float = Field(1e-4, gt=0)
    """Adam learning rate"""
    gamma: float = Field(0.95, ge=0, le=1)
    """discount factor"""
    epsilon: float = Field(0.01, ge=0, le=1)
    """probability of a uniformly random action (after the decay below)"""
    epsilon_start: float = Field(0.01, ge=0, le=1)
    """the probability before an agent's first update, decaying linearly to ``epsilon``"""
    epsilon_decay_updates: int = Field(0, ge=0)
    """updates over which the probability decays (0: ``epsilon`` throughout, the reference)"""
    replace_target_iter: int = Field(200, ge=1)
    """hard target copy every this many updates of an agent (the first at its first update)"""
    memory_size: int = Field(1000, ge=1)
    """replay ring buffer size per agent"""
    learn_start: int = Field(300, ge=0)
    """an agent updates once its buffer holds more than this many transitions"""
    batch_size: int = Field(64, ge=1)
    """minibatch size per agent and update (drawn without replacement)"""
    boundary_queue: Literal["zero", "next"] = "zero"
    """the next state of a slot's last task carries Q(t+1) = 0 (the reference's quirk) or Q(t+1)"""
    learner_seed: int = Field(-1, ge=-1)
    """seed of the network init, replay sampling and actions; -1: the scenario's seed"""


def epsilon_greedy(key, greedy, epsilon, n_actions: int):
    """``greedy`` actions, each replaced with probability ``epsilon`` by a uniformly random one."""
    k_explore, k_random = jax.random.split(key)
    random = jax.random.randint(k_random, greedy.shape, 0, n_actions)
    return jnp.where(jax.random.uniform(k_explore, greedy.shape) < epsilon, random, greedy)


class QNets(NamedTuple):
    params: Any
    target: Any
    updates: Any  # (B,) updates taken by each agent


@dataclass(frozen=True)
class DQNTS(SAC):
    """B per-BS DQN-TS agents; the transitions and replay of `SAC`, with a Q-network instead."""

    @property
    def latent(self) -> bool:
        return False

    @cached_property
    def q_net(self) -> TorchMLP:
        return TorchMLP(tuple(self.config.hidden), self.n_actions)

    def init(self, seed: int) -> SACState:
        s = jnp.zeros((1, self.n_features), jnp.float32)
        keys = jnp.stack([jax.random.PRNGKey(stream_seed(seed, "jax", b)) for b in range(self.n_agents)])
        params = jax.vmap(lambda k: self.q_net.init(k, s)["params"])(keys)
        opt = jax.vmap(optax.adam(self.config.lr).init)(params)
        nets = QNets(params, params, jnp.zeros(self.n_agents, jnp.int32))
        key = jax.random.PRNGKey(stream_seed(seed, "replay", 1 << 20))
        return SACState(nets, opt, self._empty_replay(), jnp.zeros((1,), jnp.float32), key)

    def policy_params(self, state: SACState) -> dict:
        return {"q": state.nets.params, "epsilon": self.epsilon(state.nets.updates)}

    def epsilon(self, updates):
        """Each agent's random-action probability after ``updates`` updates (B,)."""
        cfg = self.config
        if cfg.epsilon_decay_updates == 0:
            return jnp.full(updates.shape, cfg.epsilon, jnp.float32)
        frac = jnp.minimum(updates / cfg.epsilon_decay_updates, 1.0)
        return (cfg.epsilon_start + frac * (cfg.epsilon - cfg.epsilon_start)).astype(jnp.float32)

    def act_slot(self, params, key, backlog, slot: SlotEntries, t, explore: bool):
        """ε-greedy actions (width,) and, as "probabilities", the one-hot of the greedy action."""
        states = self.state_grid(backlog, slot)
        q = jax.vmap(lambda p, x: self.q_net.apply({"params": p}, x))(params["q"], states)  # (B, N, A)
        greedy = jnp.argmax(q, axis=-1)
        if explore:  # each agent its own ε, (B, 1)
            greedy = epsilon_greedy(key, greedy, params["epsilon"][:, None], self.n_actions)
        actions = greedy[slot.bs, slot.task].astype(jnp.int32)
        return actions, jax.nn.one_hot(actions, self.n_actions, dtype=jnp.float32)

    def update(self, state: SACState, learn_step) -> SACState:
        cfg = self.config
        key = jax.random.fold_in(state.key, learn_step)
        batch = replay_buffer.sample_without_replacement(
            state.replay["rows"], state.replay["count"], key, cfg.batch_size
        )
        active = state.replay["count"] > cfg.learn_start
        nets, opt = jax.vmap(self._update_agent)(state.nets, state.opt, batch, active)
        return state._replace(nets=nets, opt=opt)

    def _update_agent(self, nets: QNets, opt, batch, active):
        cfg = self.config
        q = lambda params, s: self.q_net.apply({"params": params}, s)  # noqa: E731
        target = hard_update(nets.updates % cfg.replace_target_iter == 0, nets.params, nets.target)
        live = 1.0 - batch["d"] if "d" in batch else 1.0  # episodic tasks: no value after a terminal state
        y = batch["r"] + cfg.gamma * live * q(target, batch["s2"]).max(-1)
        rows = jnp.arange(y.shape[0])

        def loss(params):
            return jnp.mean((q(params, batch["s"])[rows, batch["a"]] - jax.lax.stop_gradient(y)) ** 2)

        grads = jax.grad(loss)(nets.params)
        updates, new_opt = optax.adam(cfg.lr).update(grads, opt, nets.params)
        new = QNets(optax.apply_updates(nets.params, updates), target, nets.updates + 1)
        keep = lambda n, o: jnp.where(active, n, o)  # noqa: E731
        return jax.tree.map(keep, new, nets), jax.tree.map(keep, new_opt, opt)
