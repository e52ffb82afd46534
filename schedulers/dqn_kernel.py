"""The DQN schedulers on the compiled slot kernel: batched Q-network decisions, and whole training runs.

* `DQNPolicy` — the JAX-native decision of `schedulers.dqn.DQNScheduler` (reference
  observation): once per slot, one batched forward pass of every task's own agent on
  [d, Q(t)], greedy (argmax, or the top-k servers) or, with ``explore``, ε-greedy in the
  reference's inverted convention; then per task the scenario's allocation rule on the
  true state. `dqn_policy(scheduler)` builds it from a scheduler's current parameters.
* `KernelTrainer` — online training as in the Python path (spec §3: transitions, replay
  ring buffers, learning every ``learn_every`` slots after ``learn_start``, hard target
  copies, the exploration schedule), with the simulation, the transitions and the
  learner's update steps in one compiled call per episode, ``vmap``-ed over seeds. The
  slot and learn counters are shared by all seeds (they follow the same schedule), so
  learning stays a real branch rather than a masked one. The random streams (exploration,
  replay sampling) are JAX keys, so runs differ from the Python path's draws; the
  equations, schedule and initial networks are the same.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import lax

from mecsim import kernel
from mecsim.arrivals import episode_trace, stream, stream_seed
from mecsim.config import Scenario
from mecsim.runner import episode_row
from mecsim.scheduling import SchedulerError, make_scheduler
from mecsim.tasklog import TaskLog, episode_metrics

from .dqn import DQNScheduler, QNetwork, _functions


# -- decisions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DQNPolicy:
    """Hashable description of a DQN decision rule; ``params`` (a dict) carries the numbers.

    params: ``net`` (every agent's eval-net parameters, stacked), ``greedy_prob`` (scalar),
    ``table`` (B, A, B): the subset of action a taken at BS b (``top_k = 0``), or None for
    the per-server top-k head (``top_k = k``).
    """

    hidden: tuple
    n_actions: int
    top_k: int = 0
    explore: bool = False

    def grid_q_values(self, net, backlog, slot: kernel.SlotView, ctx: kernel.KernelContext):
        """Q (width, A) of the slot's entries: each agent on its own BS's N task slots, [d, Q(t)], then
        picked per entry (B x N rows instead of B agents x width entries)."""
        n_bs, n_tasks = ctx.n_bs, ctx.tasks_per_slot
        rows = jnp.where(slot.valid, slot.bs, n_bs)  # padding: out of range, dropped
        sizes = jnp.zeros((n_bs, n_tasks), jnp.float32).at[rows, slot.task].set(slot.size.astype(jnp.float32), mode="drop")
        queues = jnp.broadcast_to(backlog.astype(jnp.float32), (n_bs, n_tasks, n_bs))
        x = jnp.concatenate([sizes[..., None], queues], axis=-1)  # (B, N, F)
        module = QNetwork(self.hidden, self.n_actions)
        q_grid = jax.vmap(lambda p, xb: module.apply({"params": p}, xb))(net, x)  # (B, N, A)
        return q_grid[slot.bs, slot.task]

    def prepare(self, params, key, state, slot: kernel.SlotView, ctx: kernel.KernelContext):
        n = slot.size.shape[0]
        q = self.grid_q_values(params["net"], state.backlog, slot, ctx)
        k_explore, k_random = jax.random.split(key)
        if self.top_k:
            actions = jnp.argsort(-q, axis=1, stable=True)[:, : self.top_k]
            if self.explore:
                random = jnp.argsort(jax.random.uniform(k_random, (n, ctx.n_bs)), axis=1)[:, : self.top_k]
        else:
            actions = jnp.argmax(q, axis=1)[:, None]
            if self.explore:
                random = jax.random.randint(k_random, (n, 1), 0, self.n_actions)
        if self.explore:
            explore = jax.random.uniform(k_explore, (n,)) >= params["greedy_prob"]  # reference: uniform < ε → greedy
            actions = jnp.where(explore[:, None], random, actions)
        if self.top_k:
            subsets = jax.nn.one_hot(actions, ctx.n_bs, dtype=state.backlog.dtype).sum(axis=1)
        else:
            subsets = params["table"][slot.bs, actions[:, 0]]
        return {"subset": subsets, "action": actions.astype(jnp.int32)}

    def decide(self, params, key, state, task: kernel.KernelTask, ctx: kernel.KernelContext):
        subset = task.prepared["subset"]
        return subset, ctx.allocate(task, subset), task.prepared["action"]


def action_table(scheduler: DQNScheduler) -> np.ndarray:
    """(B, A, B): the subset the scheduler maps action a at BS b to (single-index action spaces)."""
    n, a = scheduler.n_bs, scheduler.n_actions()
    bs = np.repeat(np.arange(n), a)
    actions = np.tile(np.arange(a), n)[:, None]
    return np.asarray(scheduler.subsets(actions, bs), float).reshape(n, a, n)


def policy_parts(scheduler: DQNScheduler, explore: bool) -> tuple[DQNPolicy, dict]:
    top_k = int(scheduler.config.k) if _is_topk(scheduler) else 0
    policy = DQNPolicy(tuple(scheduler.config.hidden), scheduler.n_actions(), top_k, explore)
    params = {
        "net": scheduler.agents.params,
        "greedy_prob": np.float64(scheduler.greedy_prob),
        "table": None if top_k else action_table(scheduler),
    }
    return policy, params


def _is_topk(scheduler) -> bool:
    return type(scheduler).greedy is not DQNScheduler.greedy


def dqn_policy(scheduler: DQNScheduler) -> kernel.JaxPolicy | None:
    """The kernel form of a DQN scheduler's current decisions, or None where it does not apply
    (training mode: learning needs the scheduler's hooks, see `KernelTrainer`; the rich observation)."""
    if scheduler.training or scheduler.rich:
        return None
    policy, params = policy_parts(scheduler, explore=False)
    return kernel.JaxPolicy(policy.decide, params, prepare=policy.prepare)


# -- training --------------------------------------------------------------------------------------
class Learner(NamedTuple):
    """Every replica's learner state (a pytree; leading replica axis when batched)."""

    params: Any
    target: Any
    opt_state: Any
    states: Any  # (B, M, F) float32 replay ring buffers
    actions: Any  # (B, M, k) int32
    rewards: Any  # (B, M) float32
    next_states: Any  # (B, M, F) float32
    count: Any  # (B,) transitions stored so far
    key: Any  # replay sampling key


@dataclass(frozen=True)
class TrainSpec:
    """Static learning parameters (from the scheduler's config)."""

    n_tasks: int
    memory_size: int
    batch_size: int
    replace_target_iter: int
    learn_start: int
    learn_every: int
    greedy_start: float
    greedy_increment: float
    greedy_max: float
    skip_first_slot: bool
    hidden: tuple
    n_actions: int
    lr: float
    gamma: float


def _transitions(ts: TrainSpec, learner: Learner, out, slot_tasks, backlog, next_backlog, grid, next_first, t, n_tasks):
    """Store slot ``t``'s transitions (spec §3) in each agent's ring buffer, in (BS, task slot) order.

    ``n_tasks``: this replica's N (``grid`` may hold more task slots: padding, never a task).
    """
    valid = slot_tasks.valid & ~(ts.skip_first_slot & (t == 0))
    bs, n = slot_tasks.bs, slot_tasks.task
    n_bs = backlog.shape[0]
    per_agent = (jax.nn.one_hot(bs, n_bs, dtype=jnp.int32) * valid[:, None]).sum(axis=0)  # (B,)
    starts = jnp.cumsum(per_agent) - per_agent
    rank = jnp.arange(bs.shape[0]) - starts[bs]
    idx = jnp.where(valid, (learner.count[bs] + rank) % ts.memory_size, ts.memory_size)  # out of range: dropped
    last = n == n_tasks.astype(n.dtype) - 1
    next_size = jnp.where(last, next_first[bs], grid[bs, jnp.minimum(n + 1, ts.n_tasks - 1)])
    next_q = jnp.where(last[:, None], next_backlog[None, :], backlog[None, :])
    f32 = jnp.float32
    s = jnp.concatenate([slot_tasks.size[:, None], jnp.broadcast_to(backlog, (bs.shape[0], n_bs))], axis=1).astype(f32)
    s2 = jnp.concatenate([next_size[:, None], next_q], axis=1).astype(f32)
    return learner._replace(
        states=learner.states.at[bs, idx].set(s, mode="drop"),
        actions=learner.actions.at[bs, idx].set(out.aux, mode="drop"),
        rewards=learner.rewards.at[bs, idx].set(out.reward.astype(f32), mode="drop"),
        next_states=learner.next_states.at[bs, idx].set(s2, mode="drop"),
        count=learner.count + per_agent,
    )


def _learn(ts: TrainSpec, learner: Learner, learn_step):
    """One minibatch update of every agent with data (all replicas), after the target copy when due."""
    _, update, _ = _functions(ts.hidden, ts.n_actions, ts.lr, ts.gamma)
    copy = learn_step % ts.replace_target_iter == 0
    target = jax.tree.map(lambda p, q: jnp.where(copy, p, q), learner.params, learner.target)
    filled = jnp.minimum(learner.count, ts.memory_size)  # (B,)
    key = jax.random.fold_in(learner.key, learn_step)
    idx = jax.random.randint(key, (filled.shape[0], ts.batch_size), 0, jnp.maximum(filled, 1)[:, None])
    rows = jnp.arange(filled.shape[0])[:, None]
    params, opt_state, _ = update(
        learner.params,
        target,
        learner.opt_state,
        learner.states[rows, idx],
        learner.actions[rows, idx],
        learner.rewards[rows, idx],
        learner.next_states[rows, idx],
        filled > 0,
    )
    return learner._replace(params=params, target=target, opt_state=opt_state)


def train_episode(spec: kernel.Spec, ts: TrainSpec, policy: DQNPolicy, table, env, keys, tasks, grid, learner, counters):
    """One training episode of every replica: scan over slots; per slot the vmapped simulation, the
    transitions, and (on the shared schedule) one learn. Returns (outputs (R, T, W), learner, counters)."""
    slot_step, learn_step = counters
    jp = kernel.JaxPolicy(policy.decide, None, True, policy.prepare)
    n_rep = keys.shape[0]
    carry0 = jax.vmap(lambda _: kernel.initial_carry(spec.n_bs))(jnp.arange(n_rep))
    tasks_tm = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tasks)  # (T, R, W)

    def body(state, xs):
        sim, learner, slot_step, learn_step = state
        slot_tasks, t = xs
        greedy = jnp.minimum(ts.greedy_start + ts.greedy_increment * learn_step, ts.greedy_max)
        params = {"net": learner.params, "greedy_prob": greedy, "table": table}

        def one(env_r, params_r, key_r, carry_r, tasks_r):
            return kernel.slot_step(spec, jp, env_r, params_r, key_r, carry_r, tasks_r, t)

        axes = {"net": 0, "greedy_prob": None, "table": None}
        new_sim, out = jax.vmap(one, in_axes=(0, axes, 0, 0, 0))(env, params, keys, sim, slot_tasks)
        grid_t = lax.dynamic_index_in_dim(grid, t, axis=1, keepdims=False)  # (R, B, N)
        next_first = lax.dynamic_index_in_dim(grid, t + 1, axis=1, keepdims=False)[..., 0]  # (R, B)
        learner = jax.vmap(partial_transitions(ts), in_axes=(0, 0, 0, 0, 0, 0, 0, None, 0))(
            learner, out, slot_tasks, sim[0].backlog, new_sim[0].backlog, grid_t, next_first, t, env.tasks_per_slot
        )
        slot_step = slot_step + 1
        due = (slot_step > ts.learn_start) & (slot_step % ts.learn_every == 0)
        learn = jax.vmap(lambda lr: _learn(ts, lr, learn_step))
        learner = lax.cond(due, learn, lambda lr: lr, learner)
        learn_step = learn_step + due.astype(learn_step.dtype)
        return (new_sim, learner, slot_step, learn_step), out

    init = (carry0, learner, slot_step, learn_step)
    (sim, learner, slot_step, learn_step), out = lax.scan(body, init, (tasks_tm, jnp.arange(spec.decision_slots)))
    out = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), out)  # (R, T, W, ...)
    return out, sim, learner, (slot_step, learn_step)


def partial_transitions(ts: TrainSpec):
    def fn(learner, out, slot_tasks, backlog, next_backlog, grid_t, next_first, t, n_tasks):
        return _transitions(ts, learner, out, slot_tasks, backlog, next_backlog, grid_t, next_first, t, n_tasks)

    return fn


@lru_cache(maxsize=16)
def _compiled_train_episode(spec: kernel.Spec, ts: TrainSpec, policy: DQNPolicy):
    """Jitted training episode returning only what the metrics need: (make-span, failed, reward), served work."""

    def fn(table, env, keys, tasks, grid, learner, counters):
        out, sim, learner, counters = train_episode(spec, ts, policy, table, env, keys, tasks, grid, learner, counters)
        return (out.span, out.failed, out.reward), sim[1], learner, counters

    return kernel.jit(fn, donate_argnums=(5,))


def _outcomes(scenario: Scenario, episode: int, latency, failed, reward) -> TaskLog:
    """A TaskLog holding only the columns `episode_metrics` reads (cheaper than a full log per seed and episode)."""
    log = TaskLog.__new__(TaskLog)
    log.episode, log.deadline = episode, scenario.deadline
    log.slot = np.zeros(latency.shape[0], np.int64)  # only its length is used
    log.latency, log.failed, log.reward = latency, failed, reward
    log.decided = np.ones(latency.shape[0], bool)
    return log


class KernelTrainer:
    """Online training of one DQN scheduler per replica, all replicas in one compiled call per episode.

    A replica is a scenario with its seed: ``KernelTrainer(scenario, name, seeds)`` trains one
    replica per seed; ``KernelTrainer([scenario, ...], name)`` trains the given scenarios side
    by side (a sweep's cells: they must share the kernel's static shape, see `kernel.Spec`).
    Each replica's scheduler is built exactly as `mecsim.training.train` builds it (same
    initial networks), and its random streams follow its own seed, so a replica's curve does
    not depend on which others run beside it. After `run`, `write_back` puts the learned
    networks, counters and replay buffers into those schedulers (ready for ``train(False)``,
    evaluation, ``save``).
    """

    def __init__(
        self,
        scenario: Scenario | Sequence[Scenario],
        scheduler_name: str,
        seeds: Sequence[int] | None = None,
        options: dict | None = None,
    ):
        if isinstance(scenario, Scenario):
            self.scenarios = [scenario.replace(seed=s) for s in (seeds if seeds is not None else [scenario.seed])]
        elif seeds is not None:
            raise ValueError("seeds: give either one scenario and its seeds, or a list of scenarios (with their seeds)")
        else:
            self.scenarios = list(scenario)
        if not self.scenarios:
            raise ValueError("KernelTrainer needs at least one replica")
        scenario = self.scenario = self.scenarios[0]
        if any(s.model != "slotted" for s in self.scenarios):
            raise SchedulerError("kernel training runs the slotted model only")
        try:
            self.spec = kernel.Spec.of_group(self.scenarios)  # N: the largest; smaller ones are padded
        except ValueError:
            raise SchedulerError(
                "kernel training: the replicas must share B, slots, the allocation rule and the accounting flags"
            ) from None
        self.name = scheduler_name
        self.seeds = [s.seed for s in self.scenarios]
        self.schedulers = [
            make_scheduler(scheduler_name, sc, rng=stream(sc.seed, "scheduler"), **dict(options or {})) for sc in self.scenarios
        ]
        first = self.schedulers[0]
        # exploration and replay sampling follow the learner's seed (the scenario's unless `learner_seed` is set)
        self.learner_seeds = [getattr(s, "learner_seed", s.scenario.seed) for s in self.schedulers]
        if not isinstance(first, DQNScheduler) or first.rich:
            raise SchedulerError(f"scheduler {scheduler_name!r}: kernel training needs a DQN scheduler with the reference observation")
        cfg = first.config
        self.policy, params = policy_parts(first, explore=True)
        self.table = params["table"]
        self.ts = TrainSpec(
            self.spec.tasks_per_slot, cfg.memory_size, cfg.batch_size, cfg.replace_target_iter, cfg.learn_start,
            cfg.learn_every, float(cfg.greedy_start), float(cfg.greedy_increment), float(cfg.greedy_max),
            bool(cfg.skip_first_slot), tuple(cfg.hidden), first.n_actions(), float(cfg.lr), float(cfg.gamma),
        )
        stack = lambda trees: jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)  # noqa: E731
        agents = [s.agents for s in self.schedulers]
        n_rep, n_bs, mem, feat, width = len(agents), scenario.n_bs, cfg.memory_size, first.n_features, first.action_width
        self.learner = Learner(
            params=stack([a.params for a in agents]),
            target=stack([a.target for a in agents]),
            opt_state=stack([a.opt_state for a in agents]),
            states=np.zeros((n_rep, n_bs, mem, feat), np.float32),
            actions=np.zeros((n_rep, n_bs, mem, width), np.int32),
            rewards=np.zeros((n_rep, n_bs, mem), np.float32),
            next_states=np.zeros((n_rep, n_bs, mem, feat), np.float32),
            count=np.zeros((n_rep, n_bs), np.int64),
            key=np.stack([np.asarray(jax.random.PRNGKey(stream_seed(s, "replay", 1 << 20))) for s in self.learner_seeds]),
        )
        self.counters = (np.int64(first.slot_step), np.int64(first.agents.learn_step))
        self.episodes_done = 0
        self.wall_time = 0.0

    def run(self, episodes: int, first_episode: int = 0, timing: bool = True) -> list[pd.DataFrame]:
        """Train ``episodes`` online episodes; returns one per-episode table per seed (phase ``online``).

        Episode e+1 is dispatched before episode e's metrics are computed, so host and kernel overlap.
        """
        sc = self.scenario
        started = self._last = time.perf_counter()
        env = kernel.stack_env([kernel.Replica(s, 0) for s in self.scenarios])
        base = self.spec
        rows: list[list[dict]] = [[] for _ in self.seeds]
        pending = None
        with kernel.x64():
            learner, counters = jax.device_put((self.learner, self.counters))
            for e in range(first_episode, first_episode + episodes):
                trs = [kernel.pad_trace(episode_trace(s, s.seed, e), base.tasks_per_slot) for s in self.scenarios]
                needed = max(max(int(kernel.slot_counts(tr, sc.decision_slots).max(initial=0)), 1) for tr in trs)
                expected = max(kernel.expected_length(s, "nested") for s in self.scenarios)
                spec = base.with_length(kernel.pick_length(("train", base, len(trs)), needed, 8, 1.5, expected))
                fn = _compiled_train_episode(spec, self.ts, self.policy)
                tasks = kernel.compact_nested(trs, sc.decision_slots, spec.length)
                grid = np.stack([np.asarray(tr.sizes) for tr in trs])  # (R, slots, B, N)
                keys = np.stack([kernel.policy_key(seed, e) for seed in self.learner_seeds])
                out, served, learner, counters = fn(self.table, env, keys, tasks, grid, learner, counters)
                if pending is not None:
                    self._record(rows, *pending, timing)
                pending = (e, tasks, out, served)
            if pending is not None:
                self._record(rows, *pending, timing)
            self.learner, self.counters = jax.device_get((learner, counters))
        self.wall_time += time.perf_counter() - started
        self.episodes_done += episodes
        return [pd.DataFrame(r) for r in rows]

    def _record(self, rows, episode, tasks, out, served, timing):
        (span, failed, reward), served = jax.device_get((out, served))
        now = time.perf_counter()
        wall = (now - self._last) / len(self.scenarios) if timing else None  # this episode's share per seed
        self._last = now
        for i, sc in enumerate(self.scenarios):
            valid = tasks.valid[i]
            log = _outcomes(sc, episode, span[i][valid], failed[i][valid], reward[i][valid])
            horizon = sc.decision_slots * sc.slot_length
            metrics = episode_metrics(log, served[i], np.asarray(sc.capacities, float) * 1.0, horizon)
            rows[i].append(episode_row(sc, self.name, episode, "online", metrics, wall))

    def write_back(self) -> list[DQNScheduler]:
        """Put the learned state into the per-seed schedulers and return them."""
        lr = self.learner
        slot_step, learn_step = (int(c) for c in self.counters)
        for i, sched in enumerate(self.schedulers):
            pick = lambda tree: jax.tree.map(lambda a: jnp.asarray(a[i]), tree)  # noqa: E731
            agents = sched.agents
            agents.params, agents.target, agents.opt_state = pick(lr.params), pick(lr.target), pick(lr.opt_state)
            agents.learn_step = learn_step
            sched.slot_step = slot_step
            buf = agents.buffer
            buf.states[:], buf.actions[:], buf.rewards[:] = lr.states[i], lr.actions[i], lr.rewards[i]
            buf.next_states[:], buf.count[:] = lr.next_states[i], lr.count[i]
        return self.schedulers
