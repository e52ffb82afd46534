"""The slotted model compiled with JAX: many replicas of whole episodes per call.

The kernel runs the pure functions of `mecsim.slotted` and `mecsim.allocation` with
``xp = jax.numpy`` in float64, so it computes exactly the equations of the Python path:
each task slot in reference order (slot, BS, task slot index) asks a JAX-native policy
for a decision, gets its make-span and is committed to the state; ``end_slot`` drains
the queues after each slot. Replicas (episodes, seeds, and scenarios that share the
static shape: B, N, slots, allocation rule, accounting flags, but may differ in
capacities, rates, slot length, deadline or failure penalty) run side by side with
``vmap``. Replicas with fewer task slots per BS than the group's largest N are padded with
task slots that never hold a task (the decision order of the real ones is unchanged).

Empty task slots (about 70 % of them at p = 0.3) are compacted away on the host. Two
layouts of the same scan:

* ``flat`` (default for whole episodes): one ``lax.scan`` over the episode's tasks in
  decision order; a task carries an end-of-slot flag, and a slot without tasks becomes
  one padding entry that only ends the slot. Padding is only what separates the
  replicas' task counts (a few %).
* ``nested``: a ``lax.scan`` over slots around a ``lax.scan`` over the slot's tasks,
  padded to the largest slot. Needed for per-slot stepping under SimPy and for
  policies that prepare a whole slot at once (a batched Q-network pass).

A scheduler opts in with ``jax_policy() -> JaxPolicy`` (or None when its JAX form does not
apply right now, e.g. a learner in training mode). ``JaxPolicy.decide`` is pure:

    decide(params, key, state, task, ctx) -> (subset (B,), fractions (B,)[, aux])

``params`` is a pytree, ``key`` a PRNG key for this task, ``state`` the `SlotState` the
task sees (``state.backlog`` is the start-of-slot backlog Q(t), the reference
observation), ``task`` a `KernelTask` (arrival fields, delay terms on every server, and
the row of ``prepare``'s output if the policy has one), ``ctx`` a `KernelContext`
(``ctx.evaluate(task)`` for every subset, ``ctx.allocate(task, subset)`` for the scenario's
rule). The optional ``aux`` (e.g. an action index) is returned per task. ``decide`` (and
``prepare``) must be module-level functions or hashable objects that compare equal across
calls, so that compiled kernels are reused.

Per-task outputs (raw make-span, failed, reward, subset, fractions) come back in TaskLog
order, and per-episode metrics come from `mecsim.tasklog.episode_metrics`, so the compiled
and the Python path give the same tables.

SimPy still drives time: `CompiledSimulation` runs one SimPy process per replica group.
By default the whole episode is one compiled call at the group's episode event (a timeout
of the episode's horizon); ``granularity="slot"`` steps the group one slot per SimPy
timeout through a compiled per-slot kernel instead. Per-slot stepping pays one dispatch
and one host round trip per slot and the padding of the nested layout; see
`benchmarks/kernel.py` (``optimal_compiled_x64_slot_steps_tasks_per_s``) for the cost.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import simpy
from jax import lax

from . import slotted
from .allocation import allocate, subset_masks
from .arrivals import Trace, episode_trace, stream_seed
from .config import Scenario
from .engine import EpisodeResult
from .runner import ENGINES
from .scheduling import SchedulerError
from .tasklog import TaskLog, episode_metrics

GRANULARITIES = ("episode", "slot")
LAYOUTS = ("auto", "flat", "nested")
PAD_SIZE = 1.0  # size of a padding entry: any positive value keeps the padded arithmetic finite
PREPARE_KEY = 1 << 30  # fold-in index of a slot's `prepare` key (task keys use their position < 2^30)


@lru_cache(maxsize=1)
def compiler_options() -> dict:
    """XLA options for the kernel's compiled calls.

    On CPU, XLA hands reductions over more than a few thousand elements to a library
    fusion (YNNPACK) whose per-call overhead dominates at the kernel's small shapes
    (measured here: 2-4x slower steps at 32-64 replicas); plain loop fusions are used
    instead. If this XLA does not know the option, its defaults are kept.
    """
    if jax.default_backend() != "cpu":
        return {}
    options = {"xla_cpu_experimental_ynn_fusion_type": ""}
    try:
        jax.jit(lambda x: x.sum(), compiler_options=options)(jnp.ones(4)).block_until_ready()
    except Exception:  # noqa: BLE001 - an unknown option: keep XLA's defaults
        return {}
    return options


def jit(fn, **kwargs):
    """`jax.jit` with the kernel's compiler options."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


def x64():
    """Context in which the kernel is traced and called (float64), leaving JAX's global default alone."""
    return jax.enable_x64(True)


# -- what a policy sees ----------------------------------------------------------------------------
class KernelTask(NamedTuple):
    """One task slot, as a policy sees it (scalars, and (B,) delay terms)."""

    valid: Any  # False for padding (the decision is discarded)
    slot: Any  # slot index t
    pos: Any  # position of the task within its slot (0, 1, ...; reference order)
    bs: Any  # arrival BS b
    task: Any  # task slot index n
    size: Any  # Mbit
    density: Any  # Gcycles/Mbit
    wait: Any  # (B,) seconds, as `slotted.delay_terms`
    duration: Any
    split_duration: Any
    prepared: Any = None  # this task's row of the policy's `prepare` output (nested layout)


class SlotView(NamedTuple):
    """The compacted task slots of one slot (arrays of length ``width``), for a policy's ``prepare``."""

    valid: Any
    bs: Any
    task: Any
    size: Any
    density: Any


@dataclass(frozen=True)
class KernelContext:
    """Scenario-level helpers for policies, valid inside the compiled kernel."""

    p: slotted.SlottedParams
    rule: str
    masks: Any  # (2^B - 1, B) every non-empty subset, enumeration order of `subset_masks`
    n_bs: int
    tasks_per_slot: int = 0  # N: task slots per BS and slot (``SlotView.task`` < N)

    def evaluate(self, task: KernelTask, masks=None, rule: str | None = None):
        """Fractions (K, B) and make-spans (K,) of candidate subsets (default: all), like `Observation.evaluate`."""
        masks = self.masks if masks is None else masks
        return slotted.evaluate_subsets(
            task.wait, task.duration, task.split_duration, masks, rule or self.rule, self.p, jnp
        )

    def allocate(self, task: KernelTask, subset):
        """Fractions over ``subset`` under the scenario's rule on the true state (a singleton gets x = 1)."""
        shares = allocate(self.rule, task.wait, task.split_duration, subset[None, :], jnp)[0]
        return jnp.where(subset.sum() == 1, subset, shares)


@dataclass(frozen=True)
class JaxPolicy:
    """A scheduler's JAX-native form.

    ``decide``: per task, see the module docstring. ``params``: its pytree (with a leading
    replica axis when ``batched_params``). ``prepare``: optional
    ``prepare(params, key, state, slot: SlotView, ctx) -> pytree (width, ...)`` evaluated once
    per slot from the start-of-slot state; row j reaches ``decide`` as ``task.prepared``.
    """

    decide: Callable
    params: Any = None
    batched_params: bool = False
    prepare: Callable | None = None


# -- static shape and dynamic scenario arrays ------------------------------------------------------
class Env(NamedTuple):
    """The per-replica scenario numbers that may differ between vmapped replicas."""

    capacities: Any
    rates: Any
    slot_length: Any
    deadline: Any
    fail_penalty: Any
    tasks_per_slot: Any  # this replica's N (the compiled shape may be larger: padding task slots)


@dataclass(frozen=True)
class Spec:
    """What a compiled kernel is specialised on (hashable); ``length`` is the scan length per slot or episode."""

    n_bs: int
    tasks_per_slot: int
    decision_slots: int
    allocation: str
    flags: tuple  # the accounting flags of `EnvVariant` except the (dynamic) failure penalty
    length: int = 0

    @classmethod
    def from_scenario(cls, scenario: Scenario, length: int = 0) -> "Spec":
        v = scenario.variant
        flags = (
            v.wait_clip_to_deadline,
            v.local_wait_includes_tau,
            v.local_upload_in_split,
            v.tau_counts_local,
            v.tau_clamp,
            v.makespan_counts_idle,
            v.enqueue_failed_work,
        )
        return cls(scenario.n_bs, scenario.tasks_per_slot, scenario.decision_slots, scenario.allocation, flags, int(length))

    def with_length(self, length: int) -> "Spec":
        return Spec(self.n_bs, self.tasks_per_slot, self.decision_slots, self.allocation, self.flags, int(length))

    @classmethod
    def of_group(cls, scenarios: Sequence[Scenario]) -> "Spec":
        """The shape shared by ``scenarios``, with the largest N (smaller ones are padded); raises
        ValueError when they differ in anything else static."""
        specs = {cls.from_scenario(sc) for sc in scenarios}
        n_max = max(s.tasks_per_slot for s in specs)
        padded = {replace(s, tasks_per_slot=n_max) for s in specs}
        if len(padded) != 1:
            raise ValueError("replicas of one kernel call must share B, slots, the allocation rule and the flags")
        return padded.pop()


def env_of(scenario: Scenario) -> Env:
    return Env(
        np.asarray(scenario.capacities, float),
        np.asarray(scenario.rates, float),
        float(scenario.slot_length),
        float(scenario.deadline),
        float(scenario.variant.fail_penalty),
        float(scenario.tasks_per_slot),
    )


def slotted_params(spec: Spec, env: Env) -> slotted.SlottedParams:
    """`SlottedParams` with static flags from ``spec`` and (possibly traced) numbers from ``env``."""
    clip, local_tau, local_upload, tau_local, clamp, idle, enqueue = spec.flags
    eye = np.eye(spec.n_bs)
    return slotted.SlottedParams(
        capacities=env.capacities,
        rates=env.rates,
        slot_length=env.slot_length,
        deadline=env.deadline,
        wait_clip_to_deadline=clip,
        local_wait_includes_tau=local_tau,
        local_upload_in_split=local_upload,
        tau_counts_local=tau_local,
        tau_clamp=clamp,
        fail_penalty=env.fail_penalty,
        makespan_counts_idle=idle,
        enqueue_failed_work=enqueue,
        local_masks=jnp.asarray(eye > 0),
        remote_masks=jnp.asarray(1.0 - eye),
    )


def context(spec: Spec, env: Env) -> KernelContext:
    masks = jnp.asarray(subset_masks(spec.n_bs))
    return KernelContext(slotted_params(spec, env), spec.allocation, masks, spec.n_bs, spec.tasks_per_slot)


# -- compacted task slots (host side) --------------------------------------------------------------
class Tasks(NamedTuple):
    """Compacted task entries, decision order along the last axis (or the last two, nested).

    ``end`` marks the entry after which the slot ends (flat layout only; all False nested).
    """

    valid: np.ndarray
    end: np.ndarray
    slot: np.ndarray
    pos: np.ndarray
    bs: np.ndarray
    task: np.ndarray
    size: np.ndarray
    density: np.ndarray


_SIZES: dict[tuple, list[int]] = {}  # compiled scan lengths per (layout, shape): reused while they fit


def pick_length(key: tuple, needed: int, quantum: int, spread: float = 3.0, expected: float = 0.0) -> int:
    """A scan length >= ``needed``, stable across calls so that compiled kernels are reused.

    A new length is at least ``expected`` (a high quantile of the count, see `expected_length`)
    and has ``spread`` * sqrt(needed) of headroom over ``needed``, rounded up to ``quantum``; a
    length already compiled for ``key`` is reused while it fits without wasting much more.
    """
    headroom = int(spread * needed**0.5)
    known = _SIZES.setdefault(key, [])
    fits = [n for n in known if needed <= n <= max(needed + 2 * headroom, expected) + quantum]
    if fits:
        return min(fits)
    length = max(quantum, -(-int(max(needed + headroom, expected)) // quantum) * quantum)
    known.append(length)
    return length


def expected_length(scenario: Scenario, layout: str, sds: float = 5.0) -> float:
    """Mean + ``sds`` standard deviations of the entries per episode (flat) or tasks per slot (nested)."""
    bn, p, t = scenario.n_bs * scenario.tasks_per_slot, scenario.arrival_prob, scenario.decision_slots
    if layout == "nested":
        return min(bn, bn * p + sds * (bn * p * (1 - p)) ** 0.5)
    empty = (1 - p) ** bn  # a slot without tasks still takes one entry
    return min(t * max(bn, 1), t * (bn * p + empty) + sds * (t * bn * p * (1 - p)) ** 0.5)


def pad_trace(trace: Trace, tasks_per_slot: int) -> Trace:
    """``trace`` with task slots appended up to ``tasks_per_slot`` per BS that never hold a task."""
    sizes = np.asarray(trace.sizes)
    extra = tasks_per_slot - sizes.shape[-1]
    if extra < 0:
        raise ValueError(f"a trace with {sizes.shape[-1]} task slots cannot be padded to {tasks_per_slot}")
    if extra == 0:
        return trace
    pad = [(0, 0)] * (sizes.ndim - 1) + [(0, extra)]
    densities = np.broadcast_to(trace.densities, sizes.shape)
    return Trace(np.pad(sizes, pad), np.pad(densities, pad, constant_values=1.0))


def _stack_traces(traces: Sequence[Trace], decision_slots: int):
    sizes = np.stack([np.asarray(tr.sizes)[:decision_slots] for tr in traces])  # (R, T, B, N)
    densities = np.stack([np.broadcast_to(tr.densities, tr.sizes.shape)[:decision_slots] for tr in traces])
    r, t, b, n = sizes.shape
    return sizes.reshape(r, t, b * n), densities.reshape(r, t, b * n), n


def compact_nested(traces: Sequence[Trace], decision_slots: int, width: int | None = None) -> Tasks:
    """(R, T, width) entries: each slot's present tasks first (C order kept), then padding."""
    flat, dens, n = _stack_traces(traces, decision_slots)
    r, t, bn = flat.shape
    present = flat > 0
    counts = present.sum(axis=-1)
    most = int(counts.max(initial=0))
    width = max(most, 1) if width is None else int(width)
    if most > width:
        raise ValueError(f"a slot has {most} tasks but the kernel width is {width}")
    order = np.argsort(~present, axis=-1, kind="stable")[..., :width]  # present first, C order kept
    if order.shape[-1] < width:  # width beyond B*N: pad with repeated entries
        order = np.concatenate([order, np.zeros((r, t, width - order.shape[-1]), order.dtype)], axis=-1)
    valid = np.arange(width) < counts[..., None]
    return Tasks(
        valid=valid,
        end=np.zeros_like(valid),
        slot=np.broadcast_to(np.arange(t)[:, None], valid.shape).astype(np.int32),
        pos=np.broadcast_to(np.arange(width), valid.shape).astype(np.int32),
        bs=(order // n).astype(np.int32),
        task=(order % n).astype(np.int32),
        size=np.where(valid, np.take_along_axis(flat, order, axis=-1), PAD_SIZE),
        density=np.where(valid, np.take_along_axis(dens, order, axis=-1), 1.0),
    )


def compact_flat(traces: Sequence[Trace], decision_slots: int, length: int | None = None) -> Tasks:
    """(R, length) entries: every task in decision order; a slot without tasks gives one padding entry
    that only ends the slot; padding (no task, no slot end) fills up to ``length``."""
    flat, dens, n = _stack_traces(traces, decision_slots)
    r, t, bn = flat.shape
    counts = (flat > 0).sum(axis=-1)
    entries = np.maximum(counts, 1)  # (R, T)
    needed = int(entries.sum(axis=-1).max(initial=0))
    length = max(needed, 1) if length is None else int(length)
    if needed > length:
        raise ValueError(f"a replica has {needed} entries but the kernel length is {length}")
    out = {
        "valid": np.zeros((r, length), bool),
        "end": np.zeros((r, length), bool),
        "slot": np.zeros((r, length), np.int32),
        "pos": np.zeros((r, length), np.int32),
        "bs": np.zeros((r, length), np.int32),
        "task": np.zeros((r, length), np.int32),
        "size": np.full((r, length), PAD_SIZE),
        "density": np.ones((r, length)),
    }
    for i in range(r):
        slot, col = np.nonzero(flat[i] > 0)  # C order = decision order
        k = slot.shape[0]
        first = np.searchsorted(slot, np.arange(t))  # start of each slot among the tasks
        pos = np.arange(k) - first[slot]
        # each empty slot adds one entry before the tasks of later slots
        empty_before = np.cumsum(counts[i] == 0) - (counts[i] == 0)  # empty slots strictly before t
        at = np.arange(k) + empty_before[slot]
        out["valid"][i, at] = True
        out["slot"][i, at] = slot
        out["pos"][i, at] = pos
        out["bs"][i, at] = col // n
        out["task"][i, at] = col % n
        out["size"][i, at] = flat[i][slot, col]
        out["density"][i, at] = dens[i][slot, col]
        ends = np.cumsum(entries[i]) - 1  # last entry of each slot
        out["end"][i, ends] = True
        empties = np.flatnonzero(counts[i] == 0)
        out["slot"][i, ends[empties]] = empties
        out["slot"][i, entries[i].sum() :] = t - 1
    return Tasks(**out)


# -- the kernel ------------------------------------------------------------------------------------
class Outputs(NamedTuple):
    """Per entry: raw make-span, failed, reward, subset, fractions, and the policy's aux (or None)."""

    span: Any
    failed: Any
    reward: Any
    subset: Any
    fractions: Any
    aux: Any = None


def _select(flag, new, old):
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


def task_key(key, slot, pos):
    return jax.random.fold_in(jax.random.fold_in(key, slot), pos)


def task_step(ctx: KernelContext, decide: Callable, params, key, state: slotted.SlotState, x: Tasks, prepared=None):
    """One entry: the decision, its make-span and the state update (padding leaves the state alone)."""
    p = ctx.p
    wait, duration, split_duration = slotted.delay_terms(state, x.bs, x.size, x.density, p, jnp)
    task = KernelTask(x.valid, x.slot, x.pos, x.bs, x.task, x.size, x.density, wait, duration, split_duration, prepared)
    decision = decide(params, task_key(key, x.slot, x.pos), state, task, ctx)
    subset, fractions = (jnp.asarray(a, wait.dtype) for a in decision[:2])
    aux = decision[2] if len(decision) > 2 else None
    span = slotted.makespan(wait, duration, split_duration, subset, fractions, p, jnp)
    new, span, failed, reward = slotted.commit_task(state, x.bs, x.size, x.density, subset, fractions, span, p, jnp)
    return _select(x.valid, new, state), Outputs(span, failed, reward, subset, fractions, aux)


def initial_carry(n_bs: int):
    """(SlotState at the start of an episode, work served so far)."""
    zeros = jnp.zeros(n_bs)
    return slotted.SlotState(zeros, zeros, zeros), zeros


def episode_flat(spec: Spec, policy: JaxPolicy, env: Env, params, key, tasks: Tasks):
    """One episode over flat entries: returns (outputs (length,), (final state, served work (B,)))."""
    ctx = context(spec, env)

    def body(carry, x):
        state, served = carry
        state, out = task_step(ctx, policy.decide, params, key, state, x)
        drained, work = slotted.end_slot(state, ctx.p, jnp)
        state = _select(x.end, drained, state)
        served = served + jnp.where(x.end, work, 0.0)
        return (state, served), out

    carry, out = lax.scan(body, initial_carry(spec.n_bs), tasks)
    return out, carry


def slot_step(spec: Spec, policy: JaxPolicy, env: Env, params, key, carry, tasks: Tasks, t):
    """Nested layout: every entry of slot ``t`` (arrays of length ``spec.length``), then the end-of-slot drain."""
    ctx = context(spec, env)
    state, served = carry
    prepared = None
    if policy.prepare is not None:
        view = SlotView(tasks.valid, tasks.bs, tasks.task, tasks.size, tasks.density)
        prepared = policy.prepare(params, task_key(key, t, PREPARE_KEY), state, view, ctx)

    def body(state, xs):
        x, row = xs
        return task_step(ctx, policy.decide, params, key, state, x, row)

    state, out = lax.scan(body, state, (tasks, prepared))
    state, work = slotted.end_slot(state, ctx.p, jnp)
    return (state, served + work), out


def episode_nested(spec: Spec, policy: JaxPolicy, env: Env, params, key, tasks: Tasks):
    """One episode over nested entries (T, width): returns (outputs (T, width), (final state, served work))."""

    def body(carry, xs):
        slot_tasks, t = xs
        return slot_step(spec, policy, env, params, key, carry, slot_tasks, t)

    carry, out = lax.scan(body, initial_carry(spec.n_bs), (tasks, jnp.arange(spec.decision_slots)))
    return out, carry


def _static_policy(policy: JaxPolicy) -> JaxPolicy:
    """The hashable part of a policy (its functions); params travel as arguments."""
    return JaxPolicy(policy.decide, None, policy.batched_params, policy.prepare)


@lru_cache(maxsize=64)
def compiled_episodes(spec: Spec, policy: JaxPolicy, layout: str):
    """Jitted ``(env, params, keys, tasks) -> (outputs, (state, served))``, vmapped over replicas."""
    fn = partial(episode_flat if layout == "flat" else episode_nested, spec, policy)
    return jit(jax.vmap(fn, in_axes=(0, 0 if policy.batched_params else None, 0, 0)))


@lru_cache(maxsize=64)
def compiled_slots(spec: Spec, policy: JaxPolicy):
    """Jitted per-slot kernel ``(env, params, keys, carry, tasks, t) -> (carry, outputs)``, vmapped over replicas.

    ``tasks`` holds every slot (R, T, width); slot ``t`` is picked inside the compiled call.
    """

    def one(env, params, key, carry, tasks, t):
        slot_tasks = jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, t, keepdims=False), tasks)
        return slot_step(spec, policy, env, params, key, carry, slot_tasks, t)

    return jit(jax.vmap(one, in_axes=(0, 0 if policy.batched_params else None, 0, 0, 0, None)), donate_argnums=(3,))


# -- running replicas ------------------------------------------------------------------------------
@dataclass
class Replica:
    """One episode of one scenario (the seed is the scenario's)."""

    scenario: Scenario
    episode: int
    stream: str = "arrivals"
    trace: Trace | None = None

    def get_trace(self) -> Trace:
        if self.trace is None:
            self.trace = episode_trace(self.scenario, self.scenario.seed, self.episode, self.stream)
        return self.trace


def policy_key(seed: int, episode: int, stream: str = "arrivals") -> np.ndarray:
    """Raw PRNG key data of a policy for one episode: from the seed's scheduler stream and the episode
    (and the arrival stream's name, when it is not the default one)."""
    index = (episode,) if stream == "arrivals" else (episode, zlib.crc32(stream.encode()) & 0x7FFFFFFF)
    return np.asarray(jax.random.key_data(jax.random.PRNGKey(stream_seed(seed, "scheduler", *index))))


def stack_env(replicas: Sequence[Replica]) -> Env:
    envs = [env_of(r.scenario) for r in replicas]
    return Env(*(np.stack([np.asarray(getattr(e, f), float) for e in envs]) for f in Env._fields))


def _check_group(replicas: Sequence[Replica]) -> Spec:
    if not replicas:
        raise ValueError("no replicas to run")
    if any(r.scenario.model != "slotted" for r in replicas):
        raise ValueError("the compiled kernel runs the slotted delay model only")
    return Spec.of_group([r.scenario for r in replicas])


@dataclass
class BatchResult:
    """Kernel outputs of a replica group (NumPy arrays with a leading replica axis)."""

    tasks: Tasks
    outputs: Outputs
    served: np.ndarray  # (R, B) work served over the episode
    backlog: np.ndarray  # (R, B) backlog after the last decision slot
    wall_time: float

    def task_log(self, i: int, replica: Replica) -> TaskLog:
        """Replica ``i``'s TaskLog, in decision order (the Python path's layout)."""
        log = TaskLog(replica.scenario, replica.get_trace(), replica.episode)
        valid = self.tasks.valid[i]
        out = self.outputs
        log.subset[:] = out.subset[i][valid] > 0
        log.fractions[:] = out.fractions[i][valid]
        log.latency[:] = out.span[i][valid]
        log.failed[:] = out.failed[i][valid]
        log.reward[:] = out.reward[i][valid]
        log.decided[:] = True
        return log

    def aux(self, i: int):
        """Replica ``i``'s per-task aux outputs of the policy, in decision order (None without aux)."""
        if self.outputs.aux is None:
            return None
        valid = self.tasks.valid[i]
        return jax.tree.map(lambda a: np.asarray(a[i])[valid], self.outputs.aux)

    def metrics(self, i: int, replica: Replica, log: TaskLog | None = None) -> dict:
        sc = replica.scenario
        log = self.task_log(i, replica) if log is None else log
        horizon = sc.decision_slots * sc.slot_length
        return episode_metrics(log, self.served[i], np.asarray(sc.capacities, float) * 1.0, horizon)


def run_batch(
    replicas: Sequence[Replica],
    policy: JaxPolicy,
    *,
    keys: np.ndarray | None = None,
    granularity: str = "episode",
    layout: str = "auto",
    length: int | None = None,
    env: simpy.Environment | None = None,
) -> BatchResult:
    """Run a group of replicas (same static shape) in one vmapped kernel, under a SimPy clock.

    ``granularity="episode"``: the whole episode is one compiled call at the group's SimPy
    process start, followed by a timeout of the episode's horizon; ``"slot"``: one compiled
    call and one timeout of the slot length per slot (nested layout). ``layout="auto"`` is
    flat for whole episodes unless the policy prepares slots. ``length`` fixes the scan
    length (per slot when nested). ``keys``: raw PRNG key data per replica (default
    `policy_key`).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r}: allowed {', '.join(GRANULARITIES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: allowed {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = "flat" if granularity == "episode" and policy.prepare is None else "nested"
    if layout == "flat" and (granularity == "slot" or policy.prepare is not None):
        raise ValueError("per-slot stepping and slot-preparing policies need the nested layout")
    started = time.perf_counter()
    base = _check_group(replicas)
    first = replicas[0].scenario
    traces = [pad_trace(r.get_trace(), base.tasks_per_slot) for r in replicas]
    if layout == "flat":
        needed = int(max(np.maximum(slot_counts(tr, first.decision_slots), 1).sum() for tr in traces))
        expected = max(expected_length(r.scenario, "flat") for r in replicas)
        length = length or pick_length(("flat", base, len(replicas)), needed, 64, expected=expected)
        tasks = compact_flat(traces, first.decision_slots, length)
    else:
        needed = int(max(max(slot_counts(tr, first.decision_slots).max(initial=0), 1) for tr in traces))
        expected = max(expected_length(r.scenario, "nested") for r in replicas)
        length = length or pick_length(("nested", base, len(replicas)), needed, 8, spread=1.5, expected=expected)
        tasks = compact_nested(traces, first.decision_slots, length)
    spec = base.with_length(length)
    envs = stack_env(replicas)
    if keys is None:
        keys = np.stack([policy_key(r.scenario.seed, r.episode, r.stream) for r in replicas])
    static = _static_policy(policy)
    holder: dict[str, Any] = {}

    def process(sim_env: simpy.Environment):
        horizon = first.decision_slots * first.slot_length
        if granularity == "episode":
            with x64():
                fn = compiled_episodes(spec, static, layout)
                holder["result"] = jax.device_get(fn(envs, policy.params, keys, tasks))
            yield sim_env.timeout(horizon)
            return
        with x64():
            fn = compiled_slots(spec, static)
            carry = jax.vmap(lambda _: initial_carry(spec.n_bs))(jnp.arange(len(replicas)))
            device_tasks, device_env, device_keys = jax.device_put((tasks, envs, keys))
        outs = []
        for t in range(spec.decision_slots):
            with x64():
                carry, out = fn(device_env, policy.params, device_keys, carry, device_tasks, t)
            outs.append(out)
            yield sim_env.timeout(first.slot_length)
        with x64():
            out = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *outs) if outs else None
            holder["result"] = jax.device_get((out, carry))

    sim_env = env if env is not None else simpy.Environment()
    sim_env.process(process(sim_env))
    sim_env.run()
    out, (state, served) = holder["result"]
    return BatchResult(tasks, Outputs(*out), served, state.backlog, time.perf_counter() - started)


def slot_counts(trace: Trace, decision_slots: int) -> np.ndarray:
    """Tasks per decision slot of one trace."""
    return np.count_nonzero(np.asarray(trace.sizes)[:decision_slots], axis=(-2, -1))


# -- the engine side: a Simulation-like object on the kernel --------------------------------------
def jax_policy_of(scheduler) -> JaxPolicy | None:
    """The scheduler's JAX-native form, or None when it has none (or none that applies now)."""
    method = getattr(scheduler, "jax_policy", None)
    return method() if callable(method) else None


def compiled_simulation(scenario: Scenario, scheduler, engine: str = "auto", **options) -> "CompiledSimulation | None":
    """A `CompiledSimulation` when ``engine`` asks for one and the scheduler can run on it.

    ``engine="auto"``: the kernel when possible, else None (the caller keeps the Python path);
    ``"compiled"``: the kernel or a `SchedulerError` saying why not; ``"python"``: None.
    """
    if engine not in ENGINES:
        raise SchedulerError(f"engine {engine!r}: allowed {', '.join(ENGINES)}")
    if engine == "python":
        return None
    why = None
    if scenario.model != "slotted":
        why = f"the compiled kernel runs the slotted model only (model = {scenario.model!r})"
    policy = jax_policy_of(scheduler) if why is None else None
    if why is None and policy is None:
        name = getattr(scheduler, "name", type(scheduler).__name__)
        why = f"scheduler {name!r} has no JAX-native form (jax_policy) in its current mode"
    if why is not None:
        if engine == "compiled":
            raise SchedulerError(f"engine 'compiled': {why}")
        return None
    return CompiledSimulation(scenario, scheduler, policy, **options)


class CompiledSimulation:
    """Runs episodes of one scenario on the kernel, up to ``group`` episodes per vmapped call.

    The default group of 16 was the fastest on a 2-core Xeon (greedy optimal, default point:
    ~0.75 M tasks/s at 16 against ~0.55 M at 64, whose per-step arrays outgrow the L2 cache).

    A drop-in for `mecsim.engine.Simulation`: ``run_episode(e)`` returns an `EpisodeResult`.
    Episodes announced with ``plan`` (or the constructor's ``episodes``) are computed in
    groups ahead of the request; each result's wall time is its share of its group's.
    The scheduler's ``on_episode_end`` is called as each result is handed out.
    """

    def __init__(
        self,
        scenario: Scenario,
        scheduler,
        policy: JaxPolicy | None = None,
        *,
        episodes: Iterable[int] = (),
        stream: str = "arrivals",
        group: int = 16,
        granularity: str = "episode",
    ):
        if scenario.model != "slotted":
            raise SchedulerError("the compiled kernel runs the slotted model only")
        self.scenario = scenario
        self.scheduler = scheduler
        self.policy = policy if policy is not None else jax_policy_of(scheduler)
        if self.policy is None:
            raise SchedulerError(f"scheduler {getattr(scheduler, 'name', scheduler)!r} has no JAX-native form")
        self.group = max(1, int(group))
        self.granularity = granularity
        self._planned: dict[str, list[int]] = {}
        self._done: dict[tuple[str, int], EpisodeResult] = {}
        self._group_sizes: set[int] = set()
        self.plan(episodes, stream)

    def plan(self, episodes: Iterable[int], stream: str = "arrivals") -> None:
        """Announce episodes that will be asked for, so that they run together."""
        queue = self._planned.setdefault(stream, [])
        queue.extend(e for e in episodes if e not in queue)

    def run_episode(self, episode: int, trace: Trace | None = None, stream: str = "arrivals") -> EpisodeResult:
        key = (stream, episode)
        if trace is not None:
            result = self.run_episodes([episode], stream, traces={episode: trace})[0]
        else:
            if key not in self._done:
                queue = self._planned.get(stream, [])
                batch = [episode]
                if episode in queue:
                    start = queue.index(episode)
                    batch = queue[start : start + self.group]
                    del queue[start : start + self.group]
                for r in self.run_episodes(batch, stream):
                    self._done[(stream, r.episode)] = r
            result = self._done.pop(key)
        end = getattr(self.scheduler, "on_episode_end", None)
        if end is not None:
            end(episode, result.metrics)
        return result

    def run_episodes(self, episodes: Sequence[int], stream: str = "arrivals", traces: dict | None = None) -> list[EpisodeResult]:
        """Run the episodes in one vmapped call (no scheduler hooks); results in the given order."""
        traces = traces or {}
        replicas = [Replica(self.scenario, e, stream, traces.get(e)) for e in episodes]
        # a smaller group (the last of a run) is padded to a size already compiled, instead of compiling anew
        sizes = [n for n in self._group_sizes if n >= len(replicas)]
        padded = replicas + [replicas[-1]] * (min(sizes) - len(replicas)) if sizes else replicas
        self._group_sizes.add(len(padded))
        batch = run_batch(padded, self.policy, granularity=self.granularity)
        share = batch.wall_time / len(replicas)
        results = []
        for i, rep in enumerate(replicas):
            log = batch.task_log(i, rep)
            results.append(EpisodeResult(rep.episode, log, batch.metrics(i, rep, log), share))
        return results


# -- built-in policies -----------------------------------------------------------------------------
def optimal_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """Greedy over every subset: the smallest make-span, ties to the lowest enumeration index."""
    fractions, spans = ctx.evaluate(task)
    best = jnp.argmin(spans)
    return ctx.masks[best], fractions[best]


def best_single_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """The whole task on the one server with the smallest make-span, ties to the lowest index."""
    singles = jnp.eye(ctx.n_bs, dtype=task.wait.dtype)
    fractions, spans = ctx.evaluate(task, masks=singles)
    best = jnp.argmin(spans)
    return singles[best], fractions[best]


def local_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """The whole task on the arrival BS's own server."""
    onehot = jax.nn.one_hot(task.bs, ctx.n_bs, dtype=task.wait.dtype)
    return onehot, onehot


def random_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """The local server plus one uniformly drawn server (drawing the local one means local only)."""
    other = jax.random.randint(key, (), 0, ctx.n_bs)
    eye = jnp.eye(ctx.n_bs, dtype=task.wait.dtype)
    subset = jnp.maximum(eye[task.bs], eye[other])
    return subset, ctx.allocate(task, subset)


def replay_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """Given subsets, allocated by the scenario's rule on the true state.

    ``params`` (T, W, B): the subset of the task at (slot, position in slot); see `replay_params`.
    """
    subset = params[task.slot, task.pos]
    return subset, ctx.allocate(task, subset)


def replay_fractions_decide(params, key, state, task: KernelTask, ctx: KernelContext):
    """Given subsets and fractions: ``params`` is a pair of (T, W, B) arrays, see `replay_params`."""
    subsets, fractions = params
    return subsets[task.slot, task.pos], fractions[task.slot, task.pos]


def replay_params(
    scenario: Scenario, traces: Sequence[Trace], rows: Sequence[np.ndarray], width: int | None = None
) -> np.ndarray:
    """Each replica's per-task rows (n_tasks, B) in TaskLog order (subsets or fractions) laid out as
    replay params (R, T, W, B), indexed by (slot, position in slot); W: ``width`` or the largest slot."""
    t_slots = scenario.decision_slots
    per_slot = [slot_counts(tr, t_slots) for tr in traces]
    width = width or max(1, max(int(c.max(initial=0)) for c in per_slot))
    out = np.zeros((len(traces), t_slots, width, scenario.n_bs))
    out[..., 0] = 1.0  # padding: any valid decision
    for i, (counts, values) in enumerate(zip(per_slot, rows)):
        valid = np.arange(width) < counts[:, None]
        out[i][valid] = values
    return out
