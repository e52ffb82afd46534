"""Episodes of the compiled event model: decisions slot by slot on `kernel.event`'s servers and links.

Each slot's tasks are decided in order with the SimPy model's observation (`task_terms`) and
committed (`commit`: links fixed at once, shares queued for their ES); then the servers advance
to the next slot start (`event.close`). ``lax.scan`` runs the slots of a replica, ``vmap`` the
replicas (axis `event.REPLICAS`); a slot's decisions stop after the last task of the busiest replica
(`event.first_steps`: the padding after it is skipped). The learner's feedback at each slot end
(`slot_feedback`) is the SimPy model's: true outcomes of tasks already resolved, estimates for the others.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ...jaxconfig import jit, x64
from ...models import slotted
from ...models.event_model import estimate_params
from . import fault_speeds
from .event import (
    FAULTS_FLAG,
    OVERFLOWS,
    REPLICAS,
    EventState,
    Shares,
    close,
    faults_of,
    first_steps,
    initial_state,
    observed,
    schedule,
)
from .fault_speeds import LINK, SERVER
from .layout import Tasks
from .scan import PREPARE_KEY, Outputs, task_key
from .shape import Env, JaxPolicy, KernelContext, KernelTask, SlotView, Spec, context


def _links(spec: Spec, b):
    n = spec.n_bs
    return b * n + jnp.arange(n) if spec.link_topology == "pair" else jnp.arange(n)


def seen_speeds(spec: Spec, env: Env, now):
    """(capacities, rates) the decisions at ``now`` see: with observable faults the current ones (0 while
    down), else the nominal ones."""
    faults = faults_of(spec, env)
    if faults is None or not spec.observable:
        return env.capacities, env.rates
    return (
        env.capacities * fault_speeds.factor_at(faults, SERVER, now),
        env.rates * fault_speeds.factor_at(faults, LINK, now),
    )


def _per(spec: Spec, amount, speed):
    """amount / speed; with faults a zero speed (down) gives +inf, as `event_model.linear_terms`."""
    if not spec.faults:
        return amount / speed
    up = speed > 0.0
    return jnp.where(up, amount / jnp.where(up, speed, 1.0), jnp.inf)


def task_terms(spec: Spec, speeds, now, current, link_free, b, size, density, result):
    """The SimPy model's linear estimate (`event_model.linear_terms`) under ``speeds`` (`seen_speeds`):
    (wait, duration, link waits)."""
    caps, rates = speeds
    local = jnp.arange(spec.n_bs) == b
    es_wait = _per(spec, current, caps)
    compute = _per(spec, size * density, caps)
    if result is not None:
        download = jnp.where(result > 0.0, _per(spec, result, rates), 0.0) if spec.faults else result / rates
        compute = compute + (download if spec.variant.local_download else jnp.where(local, 0.0, download))
    link_wait = jnp.maximum(link_free[_links(spec, b)] - now, 0.0)
    wait = jnp.where(local, es_wait, jnp.maximum(link_wait, es_wait))
    duration = jnp.where(local, compute, compute + _per(spec, size, rates))
    return wait, duration, jnp.where(local, 0.0, link_wait)


def commit(spec: Spec, env: Env, now, t, state: EventState, x: Tasks, entry, fractions):
    """Send a task's shares on their way: the local one to its ES, the others onto their links.

    Returns the new state, the shares sent (`Shares` fields of shape (B,)) and whether one was lost on
    its link ("drop": it would arrive after the deadline)."""
    n, rates = spec.n_bs, env.rates
    b = x.bs
    local = jnp.arange(n) == b
    share = fractions > 0.0
    remote = share & ~local
    deadline = now + env.deadline
    links = _links(spec, b)
    link_free = state.link_free[links]
    begin = jnp.maximum(link_free, now)
    faults = faults_of(spec, env)
    if faults is None:
        delivery = begin + fractions * x.size / rates
    else:  # the links into ES i run at its link factor
        delivery = fault_speeds.finish(faults, LINK, rates, begin, fractions * x.size)
        past = fault_speeds.beyond(faults, delivery, remote)
        state = state._replace(
            overflow=state.overflow.at[FAULTS_FLAG].set(state.overflow[FAULTS_FLAG] | past)
        )
    if spec.deadline_policy == "drop":  # removed from the link at the deadline: it never reaches the ES
        lost = remote & (delivery > deadline)
        after = jnp.where(lost, jnp.where(begin < deadline, deadline, link_free), delivery)
    else:
        lost, after = jnp.zeros(n, bool), delivery
    work = fractions * (x.size * x.density)
    down = jnp.zeros(n) if x.result is None else fractions * x.result
    if not spec.variant.local_download:
        down = jnp.where(local, 0.0, down)
    sent = share & ~lost
    shares = Shares(jnp.where(sent, entry, -1).astype(jnp.int32), jnp.where(local, now, delivery), work, down)
    bucket = t if spec.deadline_policy == "drop" else 0
    state = state._replace(
        link_free=state.link_free.at[links].set(jnp.where(remote, after, link_free)),
        pending=state.pending.at[bucket].add(work),  # 0 where there is no share: adds nothing
        jobs=state.jobs + sent,
    )
    return state, shares, jnp.any(lost)


def estimate_context(spec: Spec, env: Env) -> KernelContext:
    """The context policies see: the event model's estimate counts only servers with a share."""
    ctx = context(spec, env)
    return replace(ctx, p=estimate_params(ctx.p))


class SlotOutputs(NamedTuple):
    out: Outputs  # decisions (outcomes are filled in at the end of the episode)
    lost: Any  # a share was lost on its link
    estimate: Any  # the decision-time make-span estimate (learner feedback for running tasks)


def slot_step(spec: Spec, policy: JaxPolicy, steps: int, env: Env, params, key, state, slot_tasks, bs, t):
    """Slot ``t`` (the servers already at its start): its tasks decided and committed in order, then the
    servers brought to the next slot start. Returns the new state and per entry the `SlotOutputs`."""
    ctx = estimate_context(spec, env)
    now = t * env.slot_length
    speeds = seen_speeds(spec, env, now)
    backlog = state.backlog
    prepared = None
    if policy.prepare is not None:
        x = slot_tasks
        view = SlotView(x.valid, x.bs, x.task, x.size, x.density, x.result, t)
        seen = slotted.SlotState(backlog, jnp.zeros_like(backlog), jnp.zeros_like(backlog))
        prepared = policy.prepare(params, task_key(key, t, PREPARE_KEY), seen, view, ctx)

    def body(state, xs):
        x, row = xs
        current = observed(spec, state, t)
        wait, duration, link_wait = task_terms(
            spec, speeds, now, current, state.link_free, x.bs, x.size, x.density, x.result
        )
        task = KernelTask(
            *(x.valid, x.slot, x.pos, x.bs, x.task, x.size, x.density),
            *(wait, duration, duration, row, x.result, link_wait, current),
        )
        seen = slotted.SlotState(backlog, current - backlog, jnp.zeros_like(current))
        decision = policy.decide(params, task_key(key, x.slot, x.pos), seen, task, ctx)
        subset, fractions = (jnp.asarray(a, wait.dtype) for a in decision[:2])
        aux = decision[2] if len(decision) > 2 else None
        estimate = jnp.max(jnp.where(fractions > 0.0, wait + fractions * duration, -jnp.inf))
        # padding commits nothing: no share
        entry = t * spec.length + x.pos
        state, shares, lost = commit(spec, env, now, t, state, x, entry, jnp.where(x.valid, fractions, 0.0))
        zero = jnp.zeros((), wait.dtype)
        out = Outputs(zero, jnp.bool_(False), zero, subset, fractions, aux)
        return state, (SlotOutputs(out, lost, estimate), shares)

    width = slot_tasks.valid.shape[0]
    tasks = jnp.max(jnp.where(slot_tasks.valid, jnp.arange(width) + 1, 0))  # the rest is padding
    state, (outputs, shares) = first_steps(body, state, (slot_tasks, prepared), tasks, width)
    # padding sends no share (a skipped step's entry is 0, not the -1 of "no share")
    shares = shares._replace(entry=jnp.where(slot_tasks.valid[:, None], shares.entry, -1))
    sent = (shares.entry >= 0).sum(axis=1).astype(jnp.int32)  # (W,) shares each task has sent
    state = state._replace(unscheduled=lax.dynamic_update_slice(state.unscheduled, sent, (t * spec.length,)))
    fresh = jax.tree.map(lambda a: a.T, shares)  # (W, B) -> (B, W)
    return close(spec, env, bs, t + 1, state, fresh, steps), outputs


def slot_feedback(spec: Spec, env: Env, state: EventState, t, outputs: SlotOutputs):
    """Slot ``t``'s (latency, failed, reward) per entry at the next slot start, as the SimPy model reports
    them to learners: true outcomes of the tasks resolved by then, the estimate for the others (raised
    to the time elapsed; failed past the deadline; "drop": a task certain or expected to miss it is
    failed with latency NaN)."""
    now = (t + 1) * env.slot_length
    arrival = t * env.slot_length
    block = jax.tree.map(
        lambda a: lax.dynamic_slice_in_dim(a, t * spec.length, spec.length),
        (state.last, state.dropped, state.unscheduled, state.resolved, state.dropped_at),
    )
    last, dropped, unscheduled, resolved, dropped_at = block
    dropped_now = outputs.lost | (dropped_at < now)  # known by now (for the tasks still running)
    finished = (unscheduled == 0) & (resolved < now)
    latency, failed = settled(spec, env, last, dropped | outputs.lost, arrival)
    guess = jnp.maximum(outputs.estimate, now - arrival)
    late = guess > env.deadline
    if spec.deadline_policy == "drop":
        late = late | dropped_now | (now >= arrival + env.deadline)
        guess = jnp.where(late, jnp.nan, guess)
    latency = jnp.where(finished, latency, guess)
    failed = jnp.where(finished, failed, late)
    return latency, failed, jnp.where(failed, fail_reward(env), -jnp.nan_to_num(latency))


def settled(spec: Spec, env: Env, last, dropped, arrival):
    """(raw latency, failed) of tasks whose every share is resolved: "drop": failed with latency NaN when a
    share was dropped; "keep": failed past the deadline."""
    latency = last - arrival
    if spec.deadline_policy == "drop":
        return jnp.where(dropped, jnp.nan, latency), dropped
    return latency, latency > env.deadline


def fail_reward(env: Env):
    """A failed task's reward, as `DelayModel.fail_reward`: -fail_penalty·deadline, 0 without a deadline."""
    return jnp.where(jnp.isfinite(env.deadline), -env.fail_penalty * env.deadline, 0.0)


def outcomes(spec: Spec, env: Env, state: EventState, tasks: Tasks, out: Outputs, lost) -> Outputs:
    """The episode's per-task outcomes, once every share is resolved: raw latency, failed, reward."""
    arrival = tasks.slot * env.slot_length
    dropped = state.dropped.reshape(arrival.shape) | lost
    latency, failed = settled(spec, env, state.last.reshape(arrival.shape), dropped, arrival)
    return out._replace(span=latency, failed=failed, reward=jnp.where(failed, fail_reward(env), -latency))


def flush(spec: Spec, env: Env, bs, state: EventState, sizes) -> EventState:
    """Everything still on its way after the horizon (every queue of each ES, full at most)."""
    return schedule(spec, env, bs, jnp.inf, state, spec.n_bs * sizes[0])


def episode(spec: Spec, policy: JaxPolicy, sizes: tuple[int, int, int], env: Env, params, key, tasks: Tasks):
    """One episode over nested entries (T, W): (outputs (T, W), (backlog at the horizon, served, overflow))."""
    bs = tasks.bs.reshape(-1)

    def body(state, xs):
        slot_tasks, t = xs
        return slot_step(spec, policy, sizes[2], env, params, key, state, slot_tasks, bs, t)

    state, outputs = lax.scan(body, initial_state(spec, sizes), (tasks, jnp.arange(spec.decision_slots)))
    backlog = state.backlog  # at the horizon
    state = flush(spec, env, bs, state, sizes)
    return outcomes(spec, env, state, tasks, outputs.out, outputs.lost), (
        backlog,
        state.served,
        state.overflow,
    )


@lru_cache(maxsize=64)
def compiled_episodes(spec: Spec, policy: JaxPolicy, sizes: tuple[int, int, int]):
    """Jitted ``(env, params, keys, tasks) -> (outputs, (backlog, served, overflow))``, vmapped over replicas."""
    fn = partial(episode, spec, policy, sizes)
    return jit(jax.vmap(fn, in_axes=(0, 0 if policy.batched_params else None, 0, 0), axis_name=REPLICAS))


SIZES = (16, 32, 64, 2)
"""The smallest first sizes of each queue of sent shares and of each ES's ring, and of the shares an ES may
schedule at one slot start; and how far fault processes are drawn, in episode horizons. The ring and the
steps start at the slot width at least (rounded up to a power of two): a busy ES may be sent a share of
every task of a slot. One that overflows (`event.OVERFLOWS`) is doubled and the call run again."""

# what last sufficed for a shape: reused, so kernels are too
_SIZES: dict[Spec, tuple] = {}


def first_sizes(spec: Spec) -> tuple:
    """The sizes to try first for this shape: those that last sufficed, else from `SIZES` and the width."""
    known = _SIZES.get(spec.with_length(0))
    if known is not None:
        return known
    wide = 1 << max(spec.length - 1, 0).bit_length()
    table, ring, steps, reach = SIZES
    return table, max(ring, wide), max(steps, wide), reach


def until_it_fits(spec: Spec, call):
    """``call(sizes) -> (result, overflow flags)`` with the first sizes for this shape, again with the
    overflowed ones doubled until nothing overflows; returns the result (and remembers the sizes).
    ``sizes``: the three of `compiled_episodes`, then the fault reach (`with_faults`)."""
    return settle(spec, call, *attempt(spec, call))


def attempt(spec: Spec, call) -> tuple:
    """The first try of `until_it_fits`, dispatched and not waited for: ``(sizes, result, overflow)``."""
    sizes = first_sizes(spec)
    return (sizes, *call(sizes))


def settle(spec: Spec, call, sizes: tuple, result, overflow):
    """Wait for a try (`attempt`) and finish `until_it_fits` from it."""
    while True:
        full = np.asarray(jax.device_get(overflow)).reshape(-1, len(OVERFLOWS)).any(axis=0)
        if not full.any():
            _SIZES[spec.with_length(0)] = sizes
            return result
        sizes = tuple(size * 2 if grew else size for size, grew in zip(sizes, full))
        result, overflow = call(sizes)


def with_faults(spec: Spec, env: Env, profiles, horizons, reach: float) -> Env:
    """``env`` with the replicas' fault realisations (`mecsim.faults.Profile`, one per replica) drawn to
    ``reach`` times each replica's horizon (s); ``env`` itself without faults."""
    if not spec.faults:
        return env
    untils = [reach * h for h in horizons]
    return env._replace(profile=fault_speeds.stack(profiles, spec.n_bs, untils))


def run_episodes(
    spec: Spec, policy: JaxPolicy, env: Env, params, keys, tasks: Tasks, profiles=(), horizons=()
):
    """The replicas' episodes, with queues and rings large enough (host side; returns NumPy outputs).
    With faults, ``profiles`` and ``horizons``: each replica's realisation and horizon (`with_faults`)."""

    def call(sizes):
        full = with_faults(spec, env, profiles, horizons, sizes[3])
        with x64():
            out, (backlog, served, overflow) = jax.device_get(
                compiled_episodes(spec, policy, sizes[:3])(full, params, keys, tasks)
            )
        return (out, backlog, served), overflow

    return until_it_fits(spec, call)
