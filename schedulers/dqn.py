"""Shared parts of the DQN schedulers (AMCoEdge, DRLCoEdge, SMCoEdge): reference spec §3–§5.

One agent per base station, no parameter sharing. For speed the B agents' parameters
are stacked along a leading axis and the forward pass and the TD update are ``vmap``-ed
over agents, each under one ``jax.jit`` (plain functions; no per-call framework overhead).

Pieces, each usable on its own:

* `QNetwork` — Flax linen MLP, weights N(0, σ), biases 0.1 (TF ``random_normal`` equivalent).
* `ReplayBuffer` — one NumPy ring buffer per agent, sampled with replacement from
  min(count, size) by a seeded generator per agent.
* `td_loss` — the reference loss: mean over the whole (batch × n_actions) matrix of
  (q_target − q_eval)², q_target = q_eval with the taken action's entry replaced by
  r + γ·max Q_target(s') (no terminal handling, hence the 1/n_actions scaling). With
  k taken actions per sample (top-k head, spec §5) the j-th taken action gets
  r + γ·(j-th largest Q_target(s')); k = 1 is the usual DQN target.
* `AgentStack` — parameters, target parameters, Adam states, buffers, the learn step,
  the hard target copy (``learn_step % replace_target_iter == 0``, checked before the
  update, so the first learn copies) and the exploration schedule.
* `DQNScheduler` — the plugin: observations, ε-greedy decisions, transitions (spec §3),
  the learning schedule, train/eval mode, save/load. Subclasses only define their action
  space (`n_actions`, `greedy`, `random_actions`, `subsets`).

Exploration follows the reference's inverted convention: ``greedy_prob`` is the
probability of the *greedy* action; it starts at 0 and rises by 0.001 per learn up to 0.99.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from flax.traverse_util import flatten_dict, unflatten_dict

from mecsim.arrivals import stream, stream_seed
from mecsim.scheduling import Decision, Observation, Scheduler, SchedulerError, SlotFeedback, SlotObservation

CHECKPOINT_FORMAT = 1
OBSERVATIONS = ("reference", "rich")


# -- hyper-parameters ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DQNConfig:
    """Hyper-parameters shared by the DQN schedulers; the defaults are AdaDQN's reference values (spec §3)."""

    hidden: tuple[int, ...] = (20, 20, 20)
    """widths of the hidden ReLU layers"""
    init_std: float = 0.3
    """weights ~ N(0, init_std)"""
    bias_init: float = 0.1
    lr: float = 1e-3
    """Adam learning rate (β1 0.9, β2 0.999, ε 1e-8)"""
    gamma: float = 0.9
    memory_size: int = 500
    """replay ring buffer size per agent"""
    batch_size: int = 32
    replace_target_iter: int = 100
    """hard target copy when learn_step % replace_target_iter == 0"""
    learn_start: int = 200
    """learn when the slot counter > learn_start ..."""
    learn_every: int = 10
    """... and slot counter % learn_every == 0"""
    greedy_start: float = 0.0
    """probability of the greedy action before the first learn (inverted ε)"""
    greedy_increment: float = 0.001
    greedy_max: float = 0.99
    observation: str = "reference"
    """'reference': [d, Q(t)] with the start-of-slot backlog; 'rich': [d, current backlog, tx backlog, density]"""
    skip_first_slot: bool = True
    """do not store transitions of slot 0 (the reference: its queues are empty)"""
    learner_seed: int = -1
    """seed of the network init, replay sampling and exploration; -1: the scenario's seed. Another value
    varies the learner's randomness while the arrival traces stay the same"""

    def __post_init__(self) -> None:
        problems = []
        if not self.hidden or any(w < 1 for w in self.hidden):
            problems.append(f"hidden = {list(self.hidden)}: need at least one layer, every width >= 1")
        for name in ("memory_size", "batch_size", "replace_target_iter", "learn_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} = {getattr(self, name)}: must be >= 1")
        if self.learn_start < 0:
            problems.append(f"learn_start = {self.learn_start}: must be >= 0")
        if self.learner_seed < -1:
            problems.append(f"learner_seed = {self.learner_seed}: must be >= 0, or -1 for the scenario's seed")
        if not self.lr > 0 or not self.init_std >= 0:
            problems.append(f"lr = {self.lr}, init_std = {self.init_std}: need lr > 0 and init_std >= 0")
        if not 0 <= self.gamma <= 1:
            problems.append(f"gamma = {self.gamma}: must be in [0, 1]")
        for name in ("greedy_start", "greedy_max"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} = {getattr(self, name)}: must be in [0, 1]")
        if self.observation not in OBSERVATIONS:
            problems.append(f"observation = {self.observation!r}: allowed {', '.join(OBSERVATIONS)}")
        if problems:
            raise SchedulerError("; ".join(problems))

    @classmethod
    def from_options(cls, scheduler: str, options: dict[str, Any]) -> "DQNConfig":
        """Build from ``--option key=value`` pairs, coercing each value to the field's type."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise SchedulerError(f"scheduler {scheduler!r}: unknown options {unknown}; known: {', '.join(fields)}")
        values = {}
        for name, raw in options.items():
            default = fields[name].default
            try:
                values[name] = _coerce(raw, default)
            except (TypeError, ValueError):
                raise SchedulerError(
                    f"scheduler {scheduler!r}: option {name} = {raw!r} is not a valid {type(default).__name__}"
                ) from None
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class BaselineDQNConfig(DQNConfig):
    """The DQN of the AMCoEdge repository's baselines (DRLCoEdge, the SMCoEdge copy; spec §4): two hidden
    layers, N(0, 0.5) weights, memory 1024, a target copy every 200 learns; the rest as AdaDQN."""

    hidden: tuple[int, ...] = (20, 20)
    init_std: float = 0.5
    memory_size: int = 1024
    replace_target_iter: int = 200


def _coerce(raw: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.lower() in ("true", "1", "yes")
        if isinstance(raw, (bool, np.bool_)) or raw in (0, 1):
            return bool(raw)
        raise ValueError(raw)
    if isinstance(default, tuple):
        items = raw if isinstance(raw, (list, tuple)) else [raw]
        return tuple(_coerce(v, int(0)) for v in items)
    if isinstance(default, int):
        if isinstance(raw, bool) or float(raw) != int(float(raw)):
            raise ValueError(raw)
        return int(float(raw))
    if isinstance(default, float):
        if isinstance(raw, bool):
            raise ValueError(raw)
        return float(raw)
    return str(raw)


def greedy_probability(learn_step: int | np.ndarray, config: DQNConfig):
    """Probability of the greedy action after ``learn_step`` learn calls (inverted ε, spec §3)."""
    return np.minimum(config.greedy_start + config.greedy_increment * np.asarray(learn_step), config.greedy_max)


# -- network -------------------------------------------------------------------------------------
class QNetwork(nn.Module):
    """MLP state → one Q-value per action: ReLU hidden layers, linear output."""

    hidden: Sequence[int]
    n_actions: int
    init_std: float = 0.3
    bias_init: float = 0.1

    @nn.compact
    def __call__(self, x):
        kernel = nn.initializers.normal(self.init_std)
        bias = nn.initializers.constant(self.bias_init)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, kernel_init=kernel, bias_init=bias)(x))
        return nn.Dense(self.n_actions, kernel_init=kernel, bias_init=bias)(x)


# -- pure learner functions ----------------------------------------------------------------------
def td_loss(params, target_params, apply, states, actions, rewards, next_states, gamma):
    """Reference DQN loss for one agent; ``actions`` is (batch, k) (k = 1 for a plain DQN)."""
    q_eval = apply(params, states)
    q_next = apply(target_params, next_states)
    k = actions.shape[-1]
    best_next = -jnp.sort(-q_next, axis=-1)[:, :k]  # k largest, descending
    y = rewards[:, None] + gamma * best_next
    rows = jnp.arange(q_eval.shape[0])[:, None]
    q_target = jax.lax.stop_gradient(q_eval.at[rows, actions].set(y))
    return jnp.mean((q_target - q_eval) ** 2)


@lru_cache(maxsize=None)
def _functions(hidden: tuple[int, ...], n_actions: int, lr: float, gamma: float):
    """Jitted (q_values, update) for one network shape; shared by every instance with that shape."""
    net = QNetwork(hidden, n_actions)

    def apply(params, x):
        return net.apply({"params": params}, x)

    tx = optax.adam(lr)

    def q_values(stacked, x, agent):
        q_all = jax.vmap(apply, in_axes=(0, None))(stacked, x)  # (agents, n, A)
        return q_all[agent, jnp.arange(x.shape[0])]

    def update_one(params, target, opt_state, s, a, r, s2, active):
        loss, grads = jax.value_and_grad(td_loss)(params, target, apply, s, a, r, s2, gamma)
        updates, new_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state), loss

    update = jax.vmap(update_one)
    return jax.jit(q_values), jax.jit(update), tx


_BLOCK = 4096


@jax.jit
def _normal_block(key, index):
    """Block ``index`` of the standard normal stream of ``key``."""
    return jax.random.normal(jax.random.fold_in(key, index), (_BLOCK,), jnp.float32)


@lru_cache(maxsize=None)
def _initialiser(hidden, n_actions, init_std, bias_init, n_features, tx):
    """Stacked (eval, target, Adam state) from one PRNG key per agent.

    Every weight is drawn N(0, init_std) from the agent's key, eval net then target net
    (the target has its own init, overwritten at the first learn); every bias is
    ``bias_init``. The draws come in fixed-size blocks (`_normal_block`), compiled once
    per process whatever the network shape.
    """
    net = QNetwork(hidden, n_actions, init_std, bias_init)
    abstract = flatten_dict(jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1, n_features))))["params"])
    kernels = [path for path in abstract if path[-1] == "kernel"]
    sizes = [int(np.prod(abstract[path].shape)) for path in kernels]
    total = sum(sizes)
    n_blocks = -(-2 * total // _BLOCK)

    def draw(keys):
        out = [np.concatenate([np.asarray(_normal_block(key, i)) for i in range(n_blocks)])[: 2 * total] for key in keys]
        return np.stack(out).reshape(len(keys), 2, total)

    def init(keys):
        z = np.asarray(draw(keys)) * np.float32(init_std)  # (agents, 2, total)
        n_agents = z.shape[0]

        def tree(which):
            flat, offset = {}, 0
            for path, size in zip(kernels, sizes):
                flat[path] = jnp.asarray(z[:, which, offset : offset + size].reshape((n_agents,) + abstract[path].shape))
                offset += size
            for path, leaf in abstract.items():
                if path[-1] != "kernel":
                    flat[path] = jnp.asarray(np.full((n_agents,) + leaf.shape, bias_init, np.float32))
            return unflatten_dict(flat)

        params = tree(0)
        # Adam's initial state is all zeros (step count, first and second moments)
        opt_state = jax.tree.map(lambda a: jnp.asarray(np.zeros(a.shape, a.dtype)), jax.eval_shape(jax.vmap(tx.init), params))
        return params, tree(1), opt_state

    return init


# -- replay --------------------------------------------------------------------------------------
class ReplayBuffer:
    """One ring buffer per agent (stacked arrays); ``sample`` draws with replacement from min(count, size)."""

    def __init__(self, n_agents: int, size: int, n_features: int, action_width: int):
        self.size = size
        self.states = np.zeros((n_agents, size, n_features), np.float32)
        self.actions = np.zeros((n_agents, size, action_width), np.int32)
        self.rewards = np.zeros((n_agents, size), np.float32)
        self.next_states = np.zeros((n_agents, size, n_features), np.float32)
        self.count = np.zeros(n_agents, np.int64)

    def add(self, agent: int, states, actions, rewards, next_states) -> None:
        m = len(rewards)
        if m == 0:
            return
        keep = slice(max(0, m - self.size), m)  # more rows than the buffer holds: the last ones win
        pos = (self.count[agent] + np.arange(m)[keep]) % self.size
        self.states[agent, pos] = np.asarray(states)[keep]
        self.actions[agent, pos] = np.asarray(actions).reshape(m, -1)[keep]
        self.rewards[agent, pos] = np.asarray(rewards)[keep]
        self.next_states[agent, pos] = np.asarray(next_states)[keep]
        self.count[agent] += m

    def sample(self, rngs: Sequence[np.random.Generator], batch: int):
        """Index (agents, batch) per agent with its own generator; agents with no data are marked inactive."""
        filled = np.minimum(self.count, self.size)
        idx = np.zeros((len(rngs), batch), np.int64)
        for agent, rng in enumerate(rngs):
            if filled[agent] > 0:
                idx[agent] = rng.choice(int(filled[agent]), size=batch, replace=True)
        rows = np.arange(len(rngs))[:, None]
        return (
            self.states[rows, idx],
            self.actions[rows, idx],
            self.rewards[rows, idx],
            self.next_states[rows, idx],
            filled > 0,
        )


# -- the B agents --------------------------------------------------------------------------------
class AgentStack:
    """B independent DQN agents (eval net, target net, Adam state, replay buffer), stacked for speed."""

    def __init__(self, config: DQNConfig, n_agents: int, n_features: int, n_actions: int, action_width: int, seed: int):
        self.config = config
        self.n_agents, self.n_features, self.n_actions = n_agents, n_features, n_actions
        self._q, self._update, tx = _functions(tuple(config.hidden), n_actions, float(config.lr), float(config.gamma))
        keys = np.stack([np.asarray(jax.random.PRNGKey(stream_seed(seed, "jax", agent))) for agent in range(n_agents)])
        init = _initialiser(tuple(config.hidden), n_actions, float(config.init_std), float(config.bias_init), n_features, tx)
        self.params, self.target, self.opt_state = init(keys)
        self.buffer = ReplayBuffer(n_agents, config.memory_size, n_features, action_width)
        self.replay_rngs = [stream(seed, "replay", agent) for agent in range(n_agents)]
        self.learn_step = 0
        self.last_loss = np.full(n_agents, np.nan)

    @property
    def greedy_prob(self) -> float:
        return float(greedy_probability(self.learn_step, self.config))

    def q_values(self, x: np.ndarray, agent: np.ndarray) -> np.ndarray:
        """Q (n, A) of each row of ``x`` under its own agent's eval net; one compiled call per size bucket."""
        n = x.shape[0]
        size = max(8, 1 << (n - 1).bit_length())
        xp = np.zeros((size, self.n_features), np.float32)
        xp[:n] = x
        ap = np.zeros(size, np.int32)
        ap[:n] = agent
        return np.asarray(self._q(self.params, xp, ap))[:n]

    def learn(self) -> np.ndarray:
        """One minibatch update of every agent that has data; returns the losses."""
        if self.learn_step % self.config.replace_target_iter == 0:
            self.target = self.params
        s, a, r, s2, active = self.buffer.sample(self.replay_rngs, self.config.batch_size)
        self.params, self.opt_state, loss = self._update(self.params, self.target, self.opt_state, s, a, r, s2, active)
        self.learn_step += 1
        self.last_loss = np.where(active, np.asarray(loss), np.nan)
        return self.last_loss

    # checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"params": self.params, "target": self.target, "opt_state": self.opt_state}

    def load_state_dict(self, data: bytes) -> None:
        restored = serialization.from_bytes(self.state_dict(), data)
        as_jnp = lambda tree: jax.tree.map(jnp.asarray, tree)  # noqa: E731
        self.params = as_jnp(restored["params"])
        self.target = as_jnp(restored["target"])
        self.opt_state = as_jnp(restored["opt_state"])


# -- the scheduler plugin ------------------------------------------------------------------------
class DQNScheduler(Scheduler):
    """A per-BS DQN scheduler. Subclasses define the action space; everything else is shared.

    Decisions are subsets (``Decision(subset, None)``): the delay model allocates with the
    scenario's rule (CWA or HECWA) on the true state. The reference observation supports the
    batched ``decide_slot`` (one forward pass per slot); the rich one needs per-task ``decide``.
    """

    name = "dqn"
    config_class: ClassVar[type[DQNConfig]] = DQNConfig
    action_width: ClassVar[int] = 1  # action indices stored per transition (k for a top-k head)

    def __init__(self, scenario, rng: np.random.Generator | None = None, **options: Any):
        config = self.config_class.from_options(self.name, options)
        if config.learner_seed >= 0:
            rng = stream(config.learner_seed, "scheduler")
        super().__init__(scenario, rng)
        self.n_bs = scenario.n_bs
        self.n_tasks = scenario.tasks_per_slot
        self.training = True
        self.slot_step = 0
        self._setup(config)

    # -- action space (subclasses) -----------------------------------------------------------------
    def n_actions(self) -> int:
        raise NotImplementedError

    def greedy(self, q: np.ndarray, bs: np.ndarray) -> np.ndarray:
        """Greedy action indices (n, action_width) from Q (n, A)."""
        return np.argmax(q, axis=1)[:, None]

    def random_actions(self, n: int, bs: np.ndarray) -> np.ndarray:
        """Uniform random action indices (n, action_width)."""
        return self.rng.integers(self.n_actions(), size=(n, 1))

    def subsets(self, actions: np.ndarray, bs: np.ndarray) -> np.ndarray:
        """0/1 subset masks (n, B) of action indices (n, action_width) taken at BSs ``bs``."""
        raise NotImplementedError

    def _validate(self, config: DQNConfig) -> None:
        """Subclass hook: reject configs that do not fit the scenario."""

    # -- setup ---------------------------------------------------------------------------------------
    def _setup(self, config: DQNConfig) -> None:
        self.config = config
        self._validate(config)
        self.rich = config.observation == "rich"
        self.n_features = 2 + 2 * self.n_bs if self.rich else 1 + self.n_bs
        self.agents = AgentStack(
            config, self.n_bs, self.n_features, self.n_actions(), self.action_width, self.learner_seed
        )
        # the engine calls decide() per task when decide_slot is None
        self.decide_slot = None if self.rich else self._decide_slot
        self._reset_records()
        self._pending: dict[int, tuple] = {}  # rich: BS -> (s, a, r) awaiting its next state

    def _reset_records(self) -> None:
        self._rec_bs: list[np.ndarray] = []
        self._rec_task: list[np.ndarray] = []
        self._rec_actions: list[np.ndarray] = []
        self._rec_states: list[np.ndarray] = []

    @property
    def greedy_prob(self) -> float:
        return self.agents.greedy_prob

    @property
    def learner_seed(self) -> int:
        return self.config.learner_seed if self.config.learner_seed >= 0 else self.scenario.seed

    # -- deciding ------------------------------------------------------------------------------------
    def _act(self, x: np.ndarray, bs: np.ndarray) -> np.ndarray:
        q = self.agents.q_values(x, bs)
        actions = self.greedy(q, bs)
        if self.training:
            n = x.shape[0]
            explore = self.rng.random(n) >= self.greedy_prob  # reference: uniform < ε → greedy
            random = self.random_actions(n, bs)
            actions = np.where(explore[:, None], random, actions)
            self._record(bs, actions, x)
        return actions

    def _record(self, bs, actions, x) -> None:
        self._rec_bs.append(np.asarray(bs))
        self._rec_actions.append(actions)
        self._rec_states.append(x)

    def features(self, size, backlog) -> np.ndarray:
        """Reference state rows [d, Q_0(t) … Q_{B-1}(t)] (raw, no normalisation)."""
        size = np.atleast_1d(np.asarray(size, np.float32))
        return np.column_stack([size, np.broadcast_to(backlog, (size.shape[0], self.n_bs))]).astype(np.float32)

    def _decide_slot(self, obs: SlotObservation) -> Decision:
        bs = np.asarray(obs.bs)
        x = self.features(obs.size, obs.backlog)
        if self.training:
            self._rec_task.append(np.asarray(obs.task))
        actions = self._act(x, bs)
        return Decision(self.subsets(actions, bs), None)

    def decide(self, obs: Observation) -> Decision:
        if self.rich:
            x = np.concatenate([[obs.size], obs.current_backlog, obs.tx_backlog, [obs.density]])[None].astype(np.float32)
        else:
            x = self.features(obs.size, obs.backlog)
        bs = np.array([obs.bs])
        if self.training:
            self._rec_task.append(np.array([obs.task]))
        actions = self._act(x, bs)
        return Decision(self.subsets(actions, bs)[0], None)

    # -- learning ------------------------------------------------------------------------------------
    def on_slot_end(self, feedback: SlotFeedback) -> None:
        if not self.training:
            self._reset_records()
            return
        if self._rec_bs:
            rec_bs = np.concatenate(self._rec_bs)
            rec_task = np.concatenate(self._rec_task)
            rec_actions = np.concatenate(self._rec_actions)
            rec_states = np.concatenate(self._rec_states)
        else:
            rec_bs = rec_task = np.zeros(0, np.int64)
            rec_actions = np.zeros((0, self.action_width), np.int64)
            rec_states = np.zeros((0, self.n_features), np.float32)
        self._reset_records()
        skip = self.config.skip_first_slot and feedback.slot == 0
        if self.rich:
            self._store_rich(feedback, rec_bs, rec_task, rec_actions, rec_states, skip)
        elif not skip and len(feedback.bs):
            self._store_reference(feedback, rec_bs, rec_task, rec_actions)
        self.slot_step += 1
        if self.slot_step > self.config.learn_start and self.slot_step % self.config.learn_every == 0:
            self.agents.learn()

    def _lookup(self, table_bs, table_task, values, bs, task):
        """Values recorded for (bs, task) pairs, and which pairs were found."""
        key_table = table_bs.astype(np.int64) * self.n_tasks + table_task
        key = np.asarray(bs, np.int64) * self.n_tasks + np.asarray(task)
        order = np.argsort(key_table, kind="stable")
        pos = np.searchsorted(key_table[order], key)
        pos = np.minimum(pos, max(len(order) - 1, 0))
        found = (key_table[order][pos] == key) if len(order) else np.zeros(len(key), bool)
        return values[order][pos] if len(order) else values[:0], found

    def _store_reference(self, fb: SlotFeedback, rec_bs, rec_task, rec_actions) -> None:
        """Transitions of spec §3: next state is the next task slot of the same BS (maybe empty),
        with the pre-update Q(t); for the last task slot, the next slot's first task with Q(t+1)."""
        bs, task = np.asarray(fb.bs), np.asarray(fb.task)
        actions, found = self._lookup(rec_bs, rec_task, rec_actions, bs, task)
        if not found.all():
            bs, task, actions = bs[found], task[found], actions[found]
        size = np.asarray(fb.size)[found]
        reward = np.asarray(fb.reward)[found]
        sizes = np.zeros((self.n_bs, self.n_tasks))
        sizes[bs, task] = size  # this slot's full size row (0 = empty task slot)
        last = task == self.n_tasks - 1
        next_size = np.where(last, np.asarray(fb.next_sizes)[bs, 0], sizes[bs, np.minimum(task + 1, self.n_tasks - 1)])
        next_backlog = np.where(last[:, None], fb.next_backlog, fb.backlog)
        s = self.features(size, fb.backlog)
        s2 = np.column_stack([next_size, next_backlog]).astype(np.float32)
        for b in np.unique(bs):
            rows = bs == b
            self.agents.buffer.add(int(b), s[rows], actions[rows], reward[rows], s2[rows])

    def _store_rich(self, fb: SlotFeedback, rec_bs, rec_task, rec_actions, rec_states, skip: bool) -> None:
        """Rich observation: the next state of a task is the next observation at the same BS
        (later in the slot, or the BS's first task of a later slot)."""
        rewards, found = self._lookup(np.asarray(fb.bs), np.asarray(fb.task), np.asarray(fb.reward), rec_bs, rec_task)
        for b in np.unique(rec_bs):
            rows = np.flatnonzero((rec_bs == b) & found)
            rows = rows[np.argsort(rec_task[rows], kind="stable")]
            if len(rows) == 0:
                continue
            states, acts, rews = rec_states[rows], rec_actions[rows], rewards[rows]
            s_list, a_list, r_list, s2_list = [], [], [], []
            if int(b) in self._pending:
                ps, pa, pr = self._pending.pop(int(b))
                s_list.append(ps[None]), a_list.append(pa[None]), r_list.append([pr]), s2_list.append(states[:1])
            if not skip and len(rows) > 1:
                s_list.append(states[:-1]), a_list.append(acts[:-1]), r_list.append(rews[:-1]), s2_list.append(states[1:])
            if not skip:
                self._pending[int(b)] = (states[-1], acts[-1], rews[-1])
            if s_list:
                self.agents.buffer.add(
                    int(b), np.concatenate(s_list), np.concatenate(a_list), np.concatenate(r_list), np.concatenate(s2_list)
                )

    def on_episode_end(self, episode: int, metrics: dict[str, float]) -> None:
        self._pending.clear()
        self._reset_records()

    def train(self, flag: bool = True) -> None:
        self.training = bool(flag)
        self._reset_records()
        self._pending.clear()

    def jax_policy(self):
        """The current decisions in the compiled kernel's form (`schedulers.dqn_kernel`), or None where
        they need this object's hooks (training mode, the rich observation)."""
        from .dqn_kernel import dqn_policy

        return dqn_policy(self)

    # -- checkpoints ---------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write ``config.json`` (hyper-parameters, counters) and ``agents.msgpack`` (every agent's nets)."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "scheduler": type(self).__module__ + ":" + type(self).__qualname__,
            "n_bs": self.n_bs,
            "n_actions": self.n_actions(),
            "config": self.config.to_json(),
            "learn_step": self.agents.learn_step,
            "slot_step": self.slot_step,
        }
        _atomic_write(out / "agents.msgpack", serialization.to_bytes(self.agents.state_dict()))
        _atomic_write(out / "config.json", json.dumps(meta, indent=2).encode())

    def load(self, path: str) -> None:
        """Restore a checkpoint written by ``save``; the network shape comes from the checkpoint."""
        src = Path(path)
        try:
            meta = json.loads((src / "config.json").read_text())
            data = (src / "agents.msgpack").read_bytes()
        except (OSError, ValueError) as err:
            raise SchedulerError(f"scheduler {self.name!r}: cannot read checkpoint {str(src)!r}: {err}") from None
        if meta.get("n_bs") != self.n_bs:
            raise SchedulerError(
                f"scheduler {self.name!r}: checkpoint {str(src)!r} has {meta.get('n_bs')} agents, scenario has {self.n_bs} BSs"
            )
        self._setup(self.config_class.from_options(self.name, meta["config"]))
        if self.n_actions() != meta.get("n_actions"):
            raise SchedulerError(
                f"scheduler {self.name!r}: checkpoint {str(src)!r} has {meta.get('n_actions')} actions, expected {self.n_actions()}"
            )
        try:
            self.agents.load_state_dict(data)
        except (ValueError, KeyError, TypeError) as err:
            raise SchedulerError(f"scheduler {self.name!r}: checkpoint {str(src)!r} does not fit: {err}") from None
        self.agents.learn_step = int(meta.get("learn_step", 0))
        self.slot_step = int(meta.get("slot_step", 0))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
