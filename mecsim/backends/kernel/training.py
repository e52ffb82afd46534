"""Online training on the compiled kernel: the simulation, the transitions and the learner's update
steps of a whole episode in one compiled call, vmapped over replicas (seeds, sweep cells).

The loop is the SimPy path's (spec §3): per slot, the exploring policy decides every task,
the slot's transitions are stored, the slot counter advances, and when the learner's
schedule says so every replica takes one update step. The slot and learn counters are
shared by all replicas (they follow the same schedule), so learning stays a real branch
rather than a masked one.

A scheduler trains here when it has a ``kernel_learner()`` (a `KernelLearner`): the
learner's own functions, the same ones its SimPy path calls, so both paths take the same
steps for the same transitions and keys. The scheduler holds its learner state in
``state`` (a pytree), its counters in ``slot_step`` and ``learn_step``, and its seed in
``learner_seed``; `KernelTrainer` starts from them and writes them back. Its random streams (exploration, replay sampling)
are JAX keys derived from the learner's seed, so a replica's curve does not depend on
which others run beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property, lru_cache, partial
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import lax

from ...arrivals import episode_trace, stream
from ...config import Scenario
from ...jaxconfig import jit, x64
from ...plugins import make_scheduler
from ...scheduling import SchedulerError, hook
from ...tables import episode_row, provenance
from ...tasklog import TaskLog, episode_metrics
from . import event, event_episode, scan
from .devices import joined, on_devices, replica_devices
from .layout import compact_nested, expected_length, pad_trace, pick_length, slot_counts
from .scan import initial_carry, policy_key
from .shape import JaxPolicy, Spec
from .simulation import Replica, fault_realisations, stack_env


class KernelLearner(Protocol):
    """A learner as the kernel's training loop drives it (hashable; every method pure JAX).

    ``state`` is one replica's learner state (a pytree); the loop vmaps over replicas.
    """

    def policy(self) -> Any:
        """The exploring policy: an object with ``prepare`` and ``decide`` (see `JaxPolicy`)."""

    def policy_params(self, state, learn_step) -> tuple[Any, Any]:
        """The policy's params for this state, and their vmap axes (0 per replica, None shared)."""

    def observe(self, state, out, slot_tasks, backlog, next_backlog, grid, next_first, t, n_tasks):
        """``state`` with slot ``t``'s transitions stored (``out``: the kernel's per-task outputs)."""

    def due(self, slot_step):
        """Whether the learner updates after this many slots."""

    def update(self, state, learn_step):
        """``state`` after one update step."""

    # optional: ``grid(traces) -> (R, slots, B, N, ...)``, what ``observe`` gets per slot as ``grid``
    # (default: the task sizes, (R, slots, B, N))


def learn_slot(learner: KernelLearner, env, grid, t, state, out, slot_tasks, backlog, next_backlog):
    """After slot ``t`` of every replica: store its transitions; returns ``(slot_step, learn_step) ->
    (state, slot_step, learn_step)`` that advances the shared counters and, when due, takes one update."""
    grid_t = lax.dynamic_index_in_dim(grid, t, axis=1, keepdims=False)  # (R, B, N)
    next_first = lax.dynamic_index_in_dim(grid, t + 1, axis=1, keepdims=False)[:, :, 0]  # (R, B, ...)
    state = jax.vmap(learner.observe, in_axes=(0, 0, 0, 0, 0, 0, 0, None, 0))(
        state, out, slot_tasks, backlog, next_backlog, grid_t, next_first, t, env.tasks_per_slot
    )

    def counters(slot_step, learn_step):
        slot_step = slot_step + 1
        due = learner.due(slot_step)
        updated = lax.cond(due, jax.vmap(lambda s: learner.update(s, learn_step)), lambda s: s, state)
        return updated, slot_step, learn_step + due.astype(learn_step.dtype)

    return counters


def train_episode(spec: Spec, learner: KernelLearner, env, keys, tasks, grid, state, counters):
    """One training episode of every replica: scan over slots; per slot the vmapped simulation, the
    transitions, and (on the shared schedule) one update. Returns (outputs (R, T, W), sim carry, state,
    counters)."""
    slot_step, learn_step = counters
    policy = learner.policy()
    jp = JaxPolicy(policy.decide, None, True, policy.prepare)
    n_rep = keys.shape[0]
    carry0 = jax.vmap(lambda _: initial_carry(spec.n_bs))(jnp.arange(n_rep))
    tasks_tm = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tasks)  # (T, R, W)

    def body(carry, xs):
        sim, state, slot_step, learn_step = carry
        slot_tasks, t = xs
        params, axes = learner.policy_params(state, learn_step)

        def one(env_r, params_r, key_r, carry_r, tasks_r):
            return scan.slot_step(spec, jp, env_r, params_r, key_r, carry_r, tasks_r, t)

        new_sim, out = jax.vmap(one, in_axes=(0, axes, 0, 0, 0))(env, params, keys, sim, slot_tasks)
        learned = learn_slot(
            learner, env, grid, t, state, out, slot_tasks, sim[0].backlog, new_sim[0].backlog
        )
        return (new_sim, *learned(slot_step, learn_step)), out

    init = (carry0, state, slot_step, learn_step)
    (sim, state, slot_step, learn_step), out = lax.scan(
        body, init, (tasks_tm, jnp.arange(spec.decision_slots))
    )
    out = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), out)  # (R, T, W, ...)
    return out, sim, state, (slot_step, learn_step)


def train_event_episode(spec: Spec, learner: KernelLearner, sizes, env, keys, tasks, grid, state, counters):
    """`train_episode` on the event model (`event_episode`): per slot the vmapped decisions and servers, the
    learner's feedback at the slot end (`event_episode.slot_feedback`), the transitions and the update.
    Returns ((make-span, failed, reward) (R, T, W), served (R, B), overflow (R, 4), state, counters).
    ``sizes``: those of `event_episode.compiled_episodes`."""
    slot_step, learn_step = counters
    policy = learner.policy()
    jp = JaxPolicy(policy.decide, None, True, policy.prepare)
    n_rep = keys.shape[0]
    sim0 = jax.vmap(lambda _: event.initial_state(spec, sizes))(jnp.arange(n_rep))
    bs = tasks.bs.reshape(n_rep, -1)
    tasks_tm = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tasks)  # (T, R, W)

    def body(carry, xs):
        sim, state, slot_step, learn_step = carry
        slot_tasks, t = xs
        params, axes = learner.policy_params(state, learn_step)

        def one(env_r, params_r, key_r, sim_r, tasks_r, bs_r):
            new, outputs = event_episode.slot_step(
                spec, jp, sizes[2], env_r, params_r, key_r, sim_r, tasks_r, bs_r, t
            )
            latency, failed, reward = event_episode.slot_feedback(spec, env_r, new, t, outputs)
            return new, outputs, outputs.out._replace(span=latency, failed=failed, reward=reward)

        new_sim, outputs, out = jax.vmap(one, in_axes=(0, axes, 0, 0, 0, 0), axis_name=event.REPLICAS)(
            env, params, keys, sim, slot_tasks, bs
        )
        learned = learn_slot(learner, env, grid, t, state, out, slot_tasks, sim.backlog, new_sim.backlog)
        return (new_sim, *learned(slot_step, learn_step)), (outputs.out, outputs.lost)

    init = (sim0, state, slot_step, learn_step)
    (sim, state, slot_step, learn_step), (out, lost) = lax.scan(
        body, init, (tasks_tm, jnp.arange(spec.decision_slots))
    )
    out, lost = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), (out, lost))  # (R, T, W, ...)

    def finish(env_r, sim_r, tasks_r, bs_r, out_r, lost_r):
        sim_r = event_episode.flush(spec, env_r, bs_r, sim_r, sizes)
        return event_episode.outcomes(spec, env_r, sim_r, tasks_r, out_r, lost_r), sim_r

    out, sim = jax.vmap(finish, axis_name=event.REPLICAS)(env, sim, tasks, bs, out, lost)
    return (out.span, out.failed, out.reward), sim.served, sim.overflow, state, (slot_step, learn_step)


# which of (env, keys, tasks, grid, state, counters) all replicas share: the counters
SHARED_IN = (False,) * 5 + (True,)


@lru_cache(maxsize=16)
def compiled_train_episode(spec: Spec, learner: KernelLearner, sizes: tuple | None = None, devices: int = 1):
    """Jitted training episode returning only what the metrics need: (make-span, failed, reward), served
    work, the event model's overflow flags (None in the slotted model), the state and the counters; with
    ``devices`` > 1, run on that many CPU devices, each with its share of the replicas (`devices.OnDevices`:
    the split outputs come back as `devices.Parts`)."""
    if spec.model == "event":  # no donation: an episode whose queues overflow is run again from its state
        fn = jit(partial(train_event_episode, spec, learner, sizes))
        return on_devices(fn, devices, SHARED_IN, (False, False, False, False, True))

    def fn(env, keys, tasks, grid, state, counters):
        out, sim, state, counters = train_episode(spec, learner, env, keys, tasks, grid, state, counters)
        return (out.span, out.failed, out.reward), sim[1], state, counters

    split = on_devices(jit(fn, donate_argnums=(4,)), devices, SHARED_IN, (False, False, False, True))

    def episode(*args):
        out, served, state, counters = split(*args)
        return out, served, None, state, counters

    return episode


def _outcomes(scenario: Scenario, episode: int, latency, failed, reward) -> TaskLog:
    """A TaskLog holding only the columns `episode_metrics` reads (cheaper than a full log per seed and episode)."""
    log = TaskLog.__new__(TaskLog)
    log.episode, log.deadline = episode, scenario.deadline
    log.slot = np.zeros(latency.shape[0], np.int64)  # only its length is used
    log.latency, log.failed, log.reward = latency, failed, reward
    log.decided = np.ones(latency.shape[0], bool)
    return log


def size_grid(traces) -> np.ndarray:
    """The task sizes of every replica, (R, slots, B, N) (0 = no task)."""
    return np.stack([np.asarray(tr.sizes) for tr in traces])


def _stack(trees):
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


class _EpisodeInputs(NamedTuple):
    """One training episode's kernel inputs, prepared on the host while the previous episode runs."""

    spec: Spec
    env: Any
    replicas: list
    keys: np.ndarray
    tasks: Any
    grid: Any


class KernelTrainer:
    """Online training of one scheduler per replica, all replicas in one compiled call per episode.

    A replica is a scenario with its seed: ``KernelTrainer(scenario, name, seeds)`` trains one
    replica per seed; ``KernelTrainer([scenario, ...], name)`` trains the given scenarios side
    by side (a sweep's cells: they must share the kernel's static shape, see `Spec`). Each
    replica's scheduler is built exactly as `mecsim.training.train` builds it (same initial
    learner state). After `run`, `write_back` puts the learned state and counters into those
    schedulers (ready for ``train(False)``, evaluation, ``save``). The replicas are split over up to
    ``devices`` CPU devices (default: as many as there are and divide them evenly), each share trained
    exactly as a call of those replicas alone would train it (`devices`).
    """

    def __init__(
        self,
        scenario: Scenario | Sequence[Scenario],
        scheduler_name: str,
        seeds: Sequence[int] | None = None,
        options: dict | None = None,
        devices: int | None = None,
    ):
        if isinstance(scenario, Scenario):
            self.scenarios = [
                scenario.replace(seed=s) for s in (seeds if seeds is not None else [scenario.seed])
            ]
        elif seeds is not None:
            raise ValueError(
                "seeds: give either one scenario and its seeds, or a list of scenarios (with their seeds)"
            )
        else:
            self.scenarios = list(scenario)
        if not self.scenarios:
            raise ValueError("KernelTrainer needs at least one replica")
        self.scenario = self.scenarios[0]
        try:
            self.spec = Spec.of_group(self.scenarios)  # N: the largest; smaller ones are padded
        except ValueError:
            raise SchedulerError(
                "kernel training: the replicas must share B, slots, the allocation rule and the accounting flags"
            ) from None
        self.devices = replica_devices(len(self.scenarios), devices)
        self.name = scheduler_name
        self.schedulers = [
            make_scheduler(scheduler_name, sc, rng=stream(sc.seed, "scheduler"), **dict(options or {}))
            for sc in self.scenarios
        ]
        first = self.schedulers[0]
        make_learner = hook(first, "kernel_learner")
        self.learner = make_learner() if make_learner is not None else None
        if self.learner is None:
            raise SchedulerError(
                f"scheduler {scheduler_name!r} cannot train on the kernel (no kernel learner)"
            )
        # exploration keys follow each learner's seed (the scenario's unless the scheduler says otherwise)
        self.learner_seeds = [getattr(s, "learner_seed", s.scenario.seed) for s in self.schedulers]
        self.state = _stack([s.state for s in self.schedulers])
        self.sources = [provenance(sc, options, "compiled") for sc in self.scenarios]
        self.counters = (np.int64(first.slot_step), np.int64(first.learn_step))
        self.episodes_done = 0
        self.wall_time = 0.0

    def run(self, episodes: int, first_episode: int = 0, timing: bool = True) -> list[pd.DataFrame]:
        """Train ``episodes`` online episodes; returns one per-episode table per replica (phase ``online``).

        While episode e runs, the host records episode e-1's metrics and prepares episode e+1's inputs;
        only then does it wait for e (the event model must see e's overflow flags before going on).
        """
        started = self._last = time.perf_counter()
        rows: list[list[dict]] = [[] for _ in self.scenarios]
        pending = None
        end = first_episode + episodes
        with x64():
            state, counters = self.state, self.counters  # split over devices: each share from the host
            if self.devices == 1:
                state, counters = jax.device_put((state, counters))
            ready = self._inputs(first_episode) if episodes > 0 else None
            for e in range(first_episode, end):
                inputs = ready
                finish = self._dispatch(inputs, state, counters)
                if pending is not None:
                    self._record(rows, *pending, timing)
                ready = self._inputs(e + 1) if e + 1 < end else None
                out, served, state, counters = finish()
                pending = (e, inputs.tasks, out, served)
            if pending is not None:
                self._record(rows, *pending, timing)
            self.state, self.counters = joined(state), jax.device_get(counters)
        self.wall_time += time.perf_counter() - started
        self.episodes_done += episodes
        return [pd.DataFrame(r) for r in rows]

    def _inputs(self, episode: int) -> _EpisodeInputs:
        """Episode ``episode``'s kernel inputs, built on the host (traces, compaction, keys, environment)."""
        sc, base = self.scenario, self.spec
        trs = [pad_trace(episode_trace(s, s.seed, episode), base.tasks_per_slot) for s in self.scenarios]
        needed = max(max(int(slot_counts(tr, sc.decision_slots).max(initial=0)), 1) for tr in trs)
        expected = max(expected_length(s, "nested") for s in self.scenarios)
        spec = base.with_length(pick_length(("train", base, len(trs)), needed, 8, 1.5, expected))
        replicas = [Replica(s, episode) for s in self.scenarios]
        return _EpisodeInputs(
            spec=spec,
            env=stack_env(replicas) if base.faults else self._fault_free_env,  # faults: drawn per episode
            replicas=replicas,
            keys=np.stack([policy_key(seed, episode) for seed in self.learner_seeds]),
            tasks=compact_nested(trs, sc.decision_slots, spec.length),
            grid=getattr(self.learner, "grid", size_grid)(trs),  # (R, slots, B, N, ...)
        )

    @cached_property
    def _fault_free_env(self):
        """The replicas' environment without faults: the same every episode."""
        return stack_env([Replica(s, 0) for s in self.scenarios])

    def _dispatch(self, inputs: _EpisodeInputs, state, counters):
        """Start one episode without waiting for it; returns the function that waits and gives
        ``(out, served, state, counters)``. The event model's episode is run again from ``state`` with
        larger queues (or faults drawn further) while one overflows."""
        spec, env, keys, tasks, grid = inputs.spec, inputs.env, inputs.keys, inputs.tasks, inputs.grid
        if spec.model != "event":
            out, served, _, state, counters = compiled_train_episode(spec, self.learner, None, self.devices)(
                env, keys, tasks, grid, state, counters
            )
            return lambda: (out, served, state, counters)
        profiles, horizons = fault_realisations(inputs.replicas)

        def call(sizes):
            fn = compiled_train_episode(spec, self.learner, sizes[:3], self.devices)
            full = event_episode.with_faults(spec, env, profiles, horizons, sizes[3])
            out, served, overflow, new_state, new_counters = fn(full, keys, tasks, grid, state, counters)
            return (out, served, new_state, new_counters), overflow

        first = event_episode.attempt(spec, call)
        return lambda: event_episode.settle(spec, call, *first)

    def _record(self, rows, episode, tasks, out, served, timing):
        (span, failed, reward), served = joined(out), joined(served)
        now = time.perf_counter()
        wall = (
            (now - self._last) / len(self.scenarios) if timing else None
        )  # this episode's share per replica
        self._last = now
        for i, sc in enumerate(self.scenarios):
            valid = tasks.valid[i]
            log = _outcomes(sc, episode, span[i][valid], failed[i][valid], reward[i][valid])
            horizon = sc.decision_slots * sc.slot_length
            metrics = episode_metrics(log, served[i], np.asarray(sc.capacities, float) * 1.0, horizon)
            rows[i].append(episode_row(sc, self.name, episode, "online", metrics, wall, self.sources[i]))

    def write_back(self) -> list:
        """Put the learned state and counters into the per-replica schedulers and return them."""
        slot_step, learn_step = (int(c) for c in self.counters)
        for i, sched in enumerate(self.schedulers):
            sched.state = jax.tree.map(lambda a, i=i: jnp.asarray(a[i]), self.state)
            sched.slot_step, sched.learn_step = slot_step, learn_step
        return self.schedulers
