"""Discrete soft actor-critic per base station, with an MLP or a diffusion actor (reference spec §6.2–6.3).

One agent per BS, no parameter sharing; the B agents' parameters are stacked and vmapped,
as in `mecsim.learning.dqn`. `SAC` is the static part (config, action count, shapes:
hashable); `SACState` the per-replica numbers. The SimPy path and the compiled kernel call
the same functions (``act_slot``, ``store_slot``, ``update``).

* actor: π(·|s) = softmax(logits). ``actor = "mlp"``: logits = MLP(s) (SAC-TS);
  ``"diffusion"``: logits = the denoising chain's x_0 (`mecsim.learning.diffusion`) from
  the latent memory X[t, b, n] (``start = "latent"``, LAD-TS / DDRL) or from N(0, I)
  (``"gaussian"``, D2SAC). Acting samples a ~ π (the reference samples; the greedy policy
  takes argmax π); with the latent start, X[t, b, n] ← π after acting.
* critics: twin Q-networks over the state (one output per action) with target copies,
  soft-updated with τ after every update; target y = r + γ·Σ_a π'(a)[min Q'(s', a) −
  α·log π'(a)] (no terminal: the task stream never ends).
* actor loss: E_s[Σ_a π(a)(α·log π(a) − min Q(s, a))], through the whole chain;
  temperature: α = exp(log α), loss E[(H − H_target)]·α with the entropy held fixed.
* replay: one ring buffer per agent; a batch is drawn without replacement once the buffer
  holds more than ``learn_start`` transitions (each agent on its own count). With the latent
  start a transition keeps the start points it was acted from; ``latent_alias`` instead
  reads X at sampling time (the reference stores NumPy views into X).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from pydantic import ConfigDict, Field, model_validator

from ..streams import stream_seed
from . import replay as replay_buffer
from .config import LearnerConfig
from .diffusion import EpsNet, denoise, vp_schedule
from .networks import TorchMLP
from .targets import soft_update

LOG_EPS = 1e-8  # log(π + 1e-8), as the reference


class SACConfig(LearnerConfig):
    """Hyper-parameters of the SAC schedulers; the defaults are LAD-TS's reference values (spec §6.4)."""

    model_config = ConfigDict(allow_inf_nan=False)

    hidden: tuple[int, ...] = Field((20, 20), min_length=1)
    """widths of the hidden ReLU layers of the actor, ε-network and critics"""
    actor_hidden: tuple[int, ...] | None = None
    """widths of the actor's (or ε-network's) hidden layers, when they differ from ``hidden``"""
    actor: Literal["diffusion", "mlp"] = "diffusion"
    """'diffusion': the denoising chain's x_0 are the logits; 'mlp': an MLP on the state (SAC-TS)"""
    start: Literal["latent", "gaussian"] = "latent"
    """the chain's start: the latent action memory X[t, b, n] (LAD) or N(0, I) (D2SAC)"""
    diffusion_steps: int = Field(5, ge=1)
    """denoising steps I of the VP schedule"""
    eps_softmax: bool = True
    """the ε-network ends in a softmax (the reference's quirk)"""
    chain_noise: float = Field(1.0, ge=0)
    """scale of the posterior noise σ_k·z in the chain (0: deterministic chain, an ablation)"""
    latent_alias: bool = False
    """replay reads X at sampling time instead of the start points acted from (the reference's aliasing)"""
    actor_lr: float = Field(1e-4, gt=0)
    """actor Adam learning rate"""
    critic_lr: float = Field(1e-3, gt=0)
    """critics' Adam learning rate"""
    alpha_lr: float = Field(3e-4, ge=0)
    """temperature (log α) Adam learning rate; 0 keeps α fixed"""
    alpha_init: float = Field(0.05, gt=0)
    """initial temperature α"""
    target_entropy: float = -1.0
    """target entropy H_target (the reference's −1: below any entropy, so α only falls)"""
    target_entropy_ratio: float | None = Field(None, gt=0, le=1)
    """if set, H_target = ratio·log|A| instead of ``target_entropy``"""
    tau: float = Field(0.005, gt=0, le=1)
    """soft target update rate"""
    gamma: float = Field(0.95, ge=0, le=1)
    """discount factor"""
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

    @model_validator(mode="after")
    def _consistent(self) -> SACConfig:
        for name, widths in (("hidden", self.hidden), ("actor_hidden", self.actor_hidden)):
            if widths is not None and (not widths or any(w < 1 for w in widths)):
                raise ValueError(f"{name} = {list(widths)}: give at least one width, every width >= 1")
        if self.batch_size > self.memory_size:
            raise ValueError(f"batch_size = {self.batch_size} exceeds memory_size = {self.memory_size}")
        return self

    def entropy_target(self, n_actions: int) -> float:
        if self.target_entropy_ratio is not None:
            return self.target_entropy_ratio * math.log(n_actions)
        return self.target_entropy


class Nets(NamedTuple):
    """Every agent's networks (stacked over agents) and the temperature."""

    actor: Any
    critic1: Any
    critic2: Any
    target1: Any
    target2: Any
    log_alpha: Any  # (B,)


class SACState(NamedTuple):
    """One replica's learner: networks, Adam states, replay, latent memory, and its sampling key."""

    nets: Nets
    opt: Any  # (actor, critic1, critic2, log_alpha) Adam states
    replay: Any  # dict of (B, M, ...) rows and a (B,) count
    latent: Any  # X (slots, B, N, A) float32, or a (1,) placeholder without the latent start
    key: Any


class SlotEntries(NamedTuple):
    """One slot's entries (arrays of a common width): the tasks first, in decision order."""

    valid: Any
    bs: Any
    task: Any
    features: Any  # (width, 2): size d (Mbit), work w (Gcycles)


@dataclass(frozen=True)
class SAC:
    """The static part of B per-BS SAC agents (hashable: keys compiled functions)."""

    config: SACConfig
    n_agents: int
    n_actions: int
    n_tasks: int  # N: task slots per BS and slot
    slots: int  # slots per episode (X has one row per slot)
    observation: Literal["dedgeai", "amcoedge"]
    """'dedgeai': s = [d, w, Q(t)] and the next state is the BS's next task; 'amcoedge': s = [d, Q(t)]
    and the next state is the next task slot (maybe empty), as the DQN schedulers store it"""

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.slots, self.n_agents, self.n_tasks)

    @property
    def n_features(self) -> int:
        return (2 if self.observation == "dedgeai" else 1) + self.n_agents

    @property
    def latent(self) -> bool:
        return self.config.actor == "diffusion" and self.config.start == "latent"

    @cached_property
    def schedule(self):
        return vp_schedule(self.config.diffusion_steps)

    @cached_property
    def actor_net(self):
        cfg = self.config
        hidden = tuple(cfg.actor_hidden or cfg.hidden)
        if cfg.actor == "mlp":
            return TorchMLP(hidden, self.n_actions)
        return EpsNet(hidden, self.n_actions, softmax=cfg.eps_softmax)

    @cached_property
    def critic_net(self) -> TorchMLP:
        return TorchMLP(tuple(self.config.hidden), self.n_actions)

    def optimizers(self):
        cfg = self.config
        return optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr), optax.adam(cfg.alpha_lr)

    # -- state ---------------------------------------------------------------------------------------
    def init(self, seed: int) -> SACState:
        """Initial state: nets from the seed's "jax" streams (one per agent), targets = critics, X ~ N(0, 1)."""
        f, a = self.n_features, self.n_actions
        x, s = jnp.zeros((1, a), jnp.float32), jnp.zeros((1, f), jnp.float32)

        def one(key):
            k_actor, k1, k2 = jax.random.split(key, 3)
            if self.config.actor == "mlp":
                actor = self.actor_net.init(k_actor, s)["params"]
            else:
                actor = self.actor_net.init(k_actor, x, jnp.zeros((1,)), s)["params"]
            c1 = self.critic_net.init(k1, s)["params"]
            c2 = self.critic_net.init(k2, s)["params"]
            return actor, c1, c2

        keys = jnp.stack([jax.random.PRNGKey(stream_seed(seed, "jax", b)) for b in range(self.n_agents)])
        actor, c1, c2 = jax.vmap(one)(keys)
        log_alpha = jnp.full((self.n_agents,), math.log(self.config.alpha_init), jnp.float32)
        nets = Nets(actor, c1, c2, c1, c2, log_alpha)
        opt_a, opt_c, opt_t = self.optimizers()
        opt = (jax.vmap(opt_a.init)(actor), jax.vmap(opt_c.init)(c1), jax.vmap(opt_c.init)(c2))
        opt = opt + (jax.vmap(opt_t.init)(log_alpha),)
        latent = (
            jax.random.normal(jax.random.PRNGKey(stream_seed(seed, "jax", 1 << 20)), self.latent_shape + (a,))
            if self.latent
            else jnp.zeros((1,), jnp.float32)
        )
        key = jax.random.PRNGKey(stream_seed(seed, "replay", 1 << 20))
        return SACState(nets, opt, self._empty_replay(), latent, key)

    def _empty_replay(self) -> dict:
        b, m, f, a = self.n_agents, self.config.memory_size, self.n_features, self.n_actions
        rows = {
            "s": np.zeros((b, m, f), np.float32),
            "a": np.zeros((b, m), np.int32),
            "r": np.zeros((b, m), np.float32),
            "s2": np.zeros((b, m, f), np.float32),
        }
        if self.latent and self.config.latent_alias:
            rows |= {"x_at": np.zeros((b, m, 3), np.int32), "x2_at": np.zeros((b, m, 3), np.int32)}
        elif self.latent:
            rows |= {"x": np.zeros((b, m, a), np.float32), "x2": np.zeros((b, m, a), np.float32)}
        return {"rows": rows, "count": np.zeros(b, np.int64)}

    # -- the policy ----------------------------------------------------------------------------------
    def logits(self, actor, states, starts, key):
        """One agent's logits (n, A) for ``states`` (n, F); ``starts``: the chain's start points (latent)."""
        cfg = self.config
        if cfg.actor == "mlp":
            return self.actor_net.apply({"params": actor}, states)
        if cfg.start == "gaussian":
            key, k_start = jax.random.split(key)
            starts = jax.random.normal(k_start, (states.shape[0], self.n_actions), jnp.float32)

        return denoise(actor, self.schedule, states, starts, key, cfg.chain_noise, cfg.eps_softmax)

    def features(self, size, work, backlog):
        """State rows from sizes (n,), works (n,) and the start-of-slot backlog (B,) (or (n, B))."""
        backlog = jnp.broadcast_to(backlog, size.shape + (self.n_agents,))
        head = [size[..., None]] + ([work[..., None]] if self.observation == "dedgeai" else [])
        return jnp.concatenate(head + [backlog], axis=-1).astype(jnp.float32)

    def policy_params(self, state: SACState) -> dict:
        """What acting needs of a learner state (a pytree with a leading replica axis in the kernel)."""
        return {"actor": state.nets.actor, "latent": state.latent}

    def state_grid(self, backlog, slot: SlotEntries):
        """Every agent's states on its own BS's N task slots, (B, N, F) (empty task slots: zeros)."""
        rows = jnp.where(slot.valid, slot.bs, self.n_agents)  # padding: out of range, dropped
        features = slot.features.astype(jnp.float32)
        grid = jnp.zeros((self.n_agents, self.n_tasks, 2), jnp.float32)
        grid = grid.at[rows, slot.task].set(features, mode="drop")
        return self.features(grid[..., 0], grid[..., 1], backlog)

    def act_slot(self, params, key, backlog, slot: SlotEntries, t, explore: bool):
        """Every decision of one slot: actions (width,) and π (width, A). Each agent runs on its own BS's
        N task slots (B·N rows, not B agents × width entries), then the entries pick their rows."""
        n_bs, n = self.n_agents, self.n_tasks
        states = self.state_grid(backlog, slot)
        latent = params["latent"]
        starts = latent[t] if self.latent else jnp.zeros((n_bs, n, self.n_actions), jnp.float32)
        keys = jax.random.split(key, n_bs + 1)
        logits = jax.vmap(self.logits)(params["actor"], states, starts, keys[:n_bs])  # (B, N, A)
        # sampled on the grid, so the draws do not depend on how the entries are padded
        actions = jax.random.categorical(keys[-1], logits) if explore else jnp.argmax(logits, axis=-1)
        pick = (slot.bs, slot.task)
        return actions[pick].astype(jnp.int32), jax.nn.softmax(logits[pick], axis=-1)

    # -- transitions -------------------------------------------------------------------------------
    def store_slot(
        self,
        state: SACState,
        actions,
        probs,
        rewards,
        slot: SlotEntries,
        backlog,
        next_backlog,
        grid,
        next_first,
        t,
        n_tasks,
    ):
        """Store slot ``t``'s transitions and, with the latent start, write π into X[t, b, n].

        ``grid`` (B, N', 2): the slot's [size, work] per task slot (size 0 = empty); ``next_first``
        (B, 2): each BS's first task slot of slot t+1; ``n_tasks``: this replica's N.
        """
        bs, n = slot.bs, slot.task
        width = grid.shape[1]
        following = grid[bs, jnp.minimum(n + 1, width - 1)]  # (W, 2)
        last = n == n_tasks.astype(n.dtype) - 1
        if self.observation == "dedgeai":
            last = last | (following[:, 0] <= 0)  # the BS's last task of the slot
        nxt = jnp.where(last[:, None], next_first[bs], following)
        boundary_q = next_backlog if self.config.boundary_queue == "next" else jnp.zeros_like(next_backlog)
        next_q = jnp.where(last[:, None], boundary_q[None, :], backlog[None, :])
        s = self.features(slot.features[:, 0], slot.features[:, 1], backlog)
        s2 = self.features(nxt[:, 0], nxt[:, 1], next_q)
        rows = {"s": s, "a": actions, "r": rewards.astype(jnp.float32), "s2": s2}
        latent = state.latent
        if self.latent:
            t_next = jnp.where(last, t + 1, t)
            n_next = jnp.where(last, 0, n + 1)
            if self.config.latent_alias:
                at = lambda *ix: jnp.stack([jnp.broadcast_to(i, bs.shape) for i in ix], axis=-1)  # noqa: E731
                rows |= {
                    "x_at": at(t, bs, n).astype(jnp.int32),
                    "x2_at": at(t_next, bs, n_next).astype(jnp.int32),
                }
            else:
                rows |= {"x": latent[t, bs, n], "x2": latent[t_next, bs, n_next]}
            safe_t = jnp.where(slot.valid, t, latent.shape[0])  # padding: dropped
            latent = latent.at[safe_t, bs, n].set(probs.astype(latent.dtype), mode="drop")
        buffers, count = replay_buffer.add_rows(
            state.replay["rows"], state.replay["count"], bs, slot.valid, rows
        )
        return state._replace(replay={"rows": buffers, "count": count}, latent=latent)

    # -- learning ------------------------------------------------------------------------------------
    def update(self, state: SACState, learn_step) -> SACState:
        """One update of every agent whose buffer holds more than ``learn_start`` transitions."""
        cfg = self.config
        key = jax.random.fold_in(state.key, learn_step)
        k_sample, k_update = jax.random.split(key)
        batch = replay_buffer.sample_without_replacement(
            state.replay["rows"], state.replay["count"], k_sample, cfg.batch_size
        )
        if self.latent and cfg.latent_alias:  # read X now, as the reference's views do
            for name, at in (("x", "x_at"), ("x2", "x2_at")):
                ix = batch.pop(at)
                batch[name] = state.latent[ix[..., 0], ix[..., 1], ix[..., 2]]
        active = state.replay["count"] > cfg.learn_start
        keys = jax.random.split(k_update, self.n_agents)
        nets, opt = jax.vmap(self._update_agent)(state.nets, state.opt, batch, keys, active)
        return state._replace(nets=nets, opt=opt)

    def _update_agent(self, nets: Nets, opt, batch, key, active):
        cfg = self.config
        opt_a, opt_c, opt_t = self.optimizers()
        q = lambda params, s: self.critic_net.apply({"params": params}, s)  # noqa: E731
        s, a, r, s2 = batch["s"], batch["a"], batch["r"], batch["s2"]
        x, x2 = batch.get("x"), batch.get("x2")
        k_next, k_now = jax.random.split(key)
        alpha = jnp.exp(nets.log_alpha)

        probs2 = jax.nn.softmax(self.logits(nets.actor, s2, x2, k_next), axis=-1)
        entropy2 = -(probs2 * jnp.log(probs2 + LOG_EPS)).sum(-1)
        min_q2 = jnp.minimum(q(nets.target1, s2), q(nets.target2, s2))
        live = 1.0 - batch["d"] if "d" in batch else 1.0  # episodic tasks: no value after a terminal state
        y = jax.lax.stop_gradient(r + cfg.gamma * live * ((probs2 * min_q2).sum(-1) + alpha * entropy2))
        rows = jnp.arange(a.shape[0])

        def critic_loss(params):
            return jnp.mean((q(params, s)[rows, a] - y) ** 2)

        critics, critic_opts = [], []
        for params, state in ((nets.critic1, opt[1]), (nets.critic2, opt[2])):
            grads = jax.grad(critic_loss)(params)
            updates, state = opt_c.update(grads, state, params)
            critics.append(optax.apply_updates(params, updates))
            critic_opts.append(state)
        min_q = jax.lax.stop_gradient(jnp.minimum(q(critics[0], s), q(critics[1], s)))

        def actor_loss(params):
            probs = jax.nn.softmax(self.logits(params, s, x, k_now), axis=-1)
            entropy = -(probs * jnp.log(probs + LOG_EPS)).sum(-1)
            return jnp.mean(-alpha * entropy - (probs * min_q).sum(-1)), entropy

        grads, entropy = jax.grad(actor_loss, has_aux=True)(nets.actor)
        updates, actor_opt = opt_a.update(grads, opt[0], nets.actor)
        actor = optax.apply_updates(nets.actor, updates)

        gap = jax.lax.stop_gradient(jnp.mean(entropy) - cfg.entropy_target(self.n_actions))
        alpha_grad = gap * jnp.exp(nets.log_alpha)  # d/dlogα of mean((H − H_target)·exp(log α))
        updates, alpha_opt = opt_t.update(alpha_grad, opt[3], nets.log_alpha)
        log_alpha = optax.apply_updates(nets.log_alpha, updates)

        new = Nets(
            actor,
            critics[0],
            critics[1],
            soft_update(cfg.tau, critics[0], nets.target1),
            soft_update(cfg.tau, critics[1], nets.target2),
            log_alpha,
        )
        new_opt = (actor_opt, critic_opts[0], critic_opts[1], alpha_opt)
        keep = lambda n, o: jnp.where(active, n, o)  # noqa: E731
        return jax.tree.map(keep, new, nets), jax.tree.map(keep, new_opt, opt)
