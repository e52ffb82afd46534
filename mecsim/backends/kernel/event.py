"""The event delay model compiled: FIFO links and FIFO edge servers as fixed-size JAX state.

It computes what `mecsim.models.event_model` computes (that module's docstring has the
physics), scanned over a replica's slots and their tasks and vmapped over replicas:

* a remote share's delivery is fixed when it is committed (each link is FIFO in decision
  order), exactly as the SimPy path computes it;
* each ES keeps a table of the jobs it has been sent and not yet scheduled (on the wire,
  or queued). At each slot start the server schedules, in order of arrival at the ES
  (ties in decision order), every job that has arrived by then. This is safe because
  every later decision arrives at or after that instant with a later sequence number, so
  no job not yet known can go before it: a later local share overtakes an earlier remote
  one still on the wire exactly when it arrives first;
* "keep": a scheduled job leaves the table; the server's work still to do is
  ``(free - now)·f``, because every scheduled job has arrived, so there is no idle gap
  after ``now``. "drop": scheduled and lost jobs stay in the table until they no longer
  count in the observed backlog (completed, or past their deadline), because the SimPy
  model keeps a slot's work in its bucket until the deadline;
* result downloads are scheduled with the job that produces them (each download link is
  fed by one ES, in its completion order).

A table that would overflow sets a flag; `run_event_batch` then runs the group again with a
larger table, so a result is never silently wrong. Faults are not compiled: the SimPy path
runs them.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ...jaxconfig import jit, x64
from ...models import slotted
from .layout import Tasks
from .scan import PREPARE_KEY, Outputs, task_key
from .shape import Env, JaxPolicy, KernelContext, KernelTask, SlotView, Spec, context

EMPTY, WAITING = 0, 1
"""A row of a job table: free, or a share sent to the ES and not yet scheduled (on the wire, or queued)."""

NO_SEQ = np.iinfo(np.int32).max


class Waiting(NamedTuple):
    """Per-ES tables of the shares not yet scheduled, each field (B, J)."""

    status: Any
    arrival: Any  # at the ES: the order of service (ties in decision order)
    wake: Any  # when an idle server takes it up (the SimPy event's time, ``now + (arrival - now)``)
    seq: Any  # decision order of the share
    work: Any  # Gcycles
    deadline: Any  # absolute
    bucket: Any  # the row of `EventState.pending` it counts in (its slot under "drop", else 0)
    entry: Any  # the task's entry (slot·width + position)
    src: Any  # the task's BS
    down: Any  # Mbit of result downloaded once served


class Scheduled(NamedTuple):
    """Per-ES rings of scheduled shares not yet completed, in order of service, each field (B, J)."""

    start: Any
    end: Any  # end of service (or of the cut at the deadline; the start for a share discarded at its turn)
    work: Any
    done: Any  # served in full
    deadline: Any
    bucket: Any


class EventState(NamedTuple):
    """One replica's state between decisions.

    ``pending`` is the SimPy model's bookkeeping of assigned and not yet processed work, kept with
    the same additions in the same order (at each commit; a subtraction when a share completes,
    between slots), so that schedulers observe the same numbers to the bit and break ties alike.
    """

    waiting: Waiting
    scheduled: Scheduled
    head: Any  # (B,) ring position of the first scheduled share
    size: Any  # (B,) scheduled shares in the ring
    free: Any  # (B,) when each server has finished what it has been scheduled
    link_free: Any  # (L,) when each upload link is free (L = B·B pairs, or B destinations)
    down_free: Any  # (L,) the same for the download links
    seq: Any  # shares committed so far
    pending: Any  # (1 or T, B) Gcycles assigned and not processed: one bucket, or one per slot ("drop")
    jobs: Any  # (B,) shares towards or at each ES ("keep": the bucket is reset to 0 when none is left)
    prefix: Any  # (B,) "drop": the live buckets of earlier slots, summed at the slot start
    progress: Any  # (B,) Gcycles of the share in service done at the slot start
    backlog: Any  # (B,) Gcycles observed at the slot start
    served: Any  # (B,) Gcycles processed within the horizon
    last: Any  # (T·W,) latest end of each task's shares (its result delivered)
    dropped: Any  # (T·W,) a share of the task was dropped
    overflow: Any  # a table or ring was full


def initial_state(spec: Spec, queue: int) -> EventState:
    b, n_links = spec.n_bs, spec.n_bs * spec.n_bs if spec.link_topology == "pair" else spec.n_bs
    zeros, ints = jnp.zeros((b, queue)), jnp.zeros((b, queue), jnp.int32)
    waiting = Waiting(ints, zeros, zeros, ints, zeros, zeros, ints, ints, ints, zeros)
    scheduled = Scheduled(zeros, zeros, zeros, jnp.zeros((b, queue), bool), zeros, ints)
    entries = spec.decision_slots * spec.length
    buckets = spec.decision_slots if spec.deadline_policy == "drop" else 1
    return EventState(
        waiting,
        scheduled,
        head=jnp.zeros(b, jnp.int32),
        size=jnp.zeros(b, jnp.int32),
        free=jnp.zeros(b),
        link_free=jnp.zeros(n_links),
        down_free=jnp.zeros(n_links),
        seq=jnp.int32(0),
        pending=jnp.zeros((buckets, b)),
        jobs=jnp.zeros(b, jnp.int32),
        prefix=jnp.zeros(b),
        progress=jnp.zeros(b),
        backlog=jnp.zeros(b),
        served=jnp.zeros(b),
        last=jnp.zeros(entries),
        dropped=jnp.zeros(entries, bool),
        overflow=jnp.bool_(False),
    )


def _set_rows(table, rows, cols, values: dict, where):
    """``table`` with row ``cols[i]`` of ES ``i`` set to ``values`` where ``where[i]``."""
    return table._replace(
        **{
            name: getattr(table, name)
            .at[rows, cols]
            .set(jnp.where(where, value, getattr(table, name)[rows, cols]))
            for name, value in values.items()
        }
    )


# -- the servers -----------------------------------------------------------------------------------
def _schedule_next(spec: Spec, env: Env, horizon, target, state: EventState) -> EventState:
    """Every ES with a share arrived by ``target`` schedules its first one (by arrival, then sequence)."""
    table, caps, rates, n = state.waiting, env.capacities, env.rates, spec.n_bs
    drop = spec.deadline_policy == "drop"
    rows = jnp.arange(n)
    eligible = (table.status == WAITING) & (table.arrival <= target)
    first_arrival = jnp.min(jnp.where(eligible, table.arrival, jnp.inf), axis=1, keepdims=True)
    tied = eligible & (table.arrival == first_arrival)
    j = jnp.argmin(jnp.where(tied, table.seq, NO_SEQ), axis=1)
    active = eligible.any(axis=1)
    pick = jax.tree.map(lambda a: a[rows, j], table)
    start = jnp.maximum(state.free, pick.wake)
    finish = start + pick.work / caps  # as SimPy's clock: start + w/f
    if drop:
        head = pick.deadline <= start  # past its deadline when its turn comes: discarded, no time taken
        cut = ~head & (finish > pick.deadline)  # cut at the deadline, partial service lost
        end = jnp.where(head, start, jnp.where(cut, pick.deadline, finish))
        free = jnp.where(head, start, jnp.where(cut, start + (pick.deadline - start), finish))
        done = ~head & ~cut
    else:
        end, free, done = finish, finish, jnp.ones(n, bool)
    served = jnp.where(
        done & (end <= horizon),
        pick.work,
        jnp.where(start < horizon, (jnp.minimum(end, horizon) - start) * caps, 0.0),
    )
    # the result goes back to the task's BS, FIFO on this ES's download link
    fetch = done & (pick.down > 0.0)
    link = rows * n + pick.src if spec.link_topology == "pair" else rows
    begin = jnp.maximum(state.down_free[link], end)
    delivered = begin + pick.down / rates
    lost_down = fetch & (delivered > pick.deadline) if drop else jnp.zeros(n, bool)
    after = jnp.where(
        lost_down, jnp.where(begin < pick.deadline, pick.deadline, state.down_free[link]), delivered
    )
    n_links = state.down_free.shape[0]
    down_free = state.down_free.at[jnp.where(active & fetch, link, n_links)].set(after, mode="drop")
    completed = done & ~lost_down
    n_entries = state.last.shape[0]
    last = state.last.at[jnp.where(active & completed, pick.entry, n_entries)].max(
        jnp.where(fetch, delivered, end), mode="drop"
    )
    dropped = state.dropped.at[jnp.where(active & ~completed, pick.entry, n_entries)].set(True, mode="drop")
    queue = table.status.shape[1]
    tail = (state.head + state.size) % queue
    ring = dict(start=start, end=end, work=pick.work, done=done, deadline=pick.deadline, bucket=pick.bucket)
    return state._replace(
        waiting=table._replace(status=table.status.at[rows, j].set(jnp.where(active, EMPTY, pick.status))),
        scheduled=_set_rows(state.scheduled, rows, tail, ring, active),
        size=state.size + active,
        free=jnp.where(active, free, state.free),
        down_free=down_free,
        served=state.served + jnp.where(active, served, 0.0),
        last=last,
        dropped=dropped,
        overflow=state.overflow | jnp.any(active & (state.size == queue)),
    )


def _complete_next(spec: Spec, now, state: EventState) -> EventState:
    """Every ES whose first scheduled share ended before ``now`` lets it go (SimPy's bookkeeping at its end)."""
    rows = jnp.arange(spec.n_bs)
    ring = jax.tree.map(lambda a: a[rows, state.head], state.scheduled)
    active = (state.size > 0) & (ring.end < now)
    take = active & ring.done
    pending = state.pending.at[ring.bucket, rows].add(jnp.where(take, -ring.work, 0.0))
    jobs = state.jobs - active
    if spec.deadline_policy != "drop":  # nothing left towards the ES: clear the rounding residue
        pending = jnp.where(active & (jobs == 0), 0.0, pending)
    queue = state.scheduled.start.shape[1]
    return state._replace(
        head=jnp.where(active, (state.head + 1) % queue, state.head),
        size=state.size - active,
        pending=pending,
        jobs=jobs,
    )


def advance(spec: Spec, env: Env, horizon, now, state: EventState) -> EventState:
    """Bring the servers to ``now``: schedule every share arrived by then, let go of those ended before it,
    and take the progress of the share in service."""

    def arrived(s):
        return jnp.any((s.waiting.status == WAITING) & (s.waiting.arrival <= now))

    def ended(s):
        rows = jnp.arange(spec.n_bs)
        return jnp.any((s.size > 0) & (s.scheduled.end[rows, s.head] < now))

    state = lax.while_loop(arrived, lambda s: _schedule_next(spec, env, horizon, now, s), state)
    state = lax.while_loop(ended, lambda s: _complete_next(spec, now, s), state)
    rows = jnp.arange(spec.n_bs)
    first = jax.tree.map(lambda a: a[rows, state.head], state.scheduled)
    in_service = (state.size > 0) & (first.start < now)
    if spec.deadline_policy == "drop":
        in_service = in_service & (first.deadline > now)
    done = (now - first.start) * env.capacities
    progress = jnp.where(in_service, jnp.where(done > first.work, first.work, done), 0.0)
    return state._replace(progress=progress)


def live_prefix(spec: Spec, env: Env, now, t, pending):
    """ "drop": the buckets of slots before ``t`` whose deadline is after ``now``, summed in slot order as
    the SimPy model sums them (``spec.window`` slots back at most)."""
    total = jnp.zeros(pending.shape[1])
    for back in range(spec.window, 0, -1):
        s = t - back
        live = (s >= 0) & (s * env.slot_length + env.deadline > now)
        total = jnp.where(live, total + pending[jnp.maximum(s, 0)], total)
    return total


def observed(spec: Spec, state: EventState, t):
    """The backlog the decision now sees (Gcycles per ES), from the bookkeeping."""
    if spec.deadline_policy == "drop":
        total = state.prefix + state.pending[t]
    else:
        total = state.pending[0]
    return jnp.maximum(total - state.progress, 0.0)


# -- decisions ---------------------------------------------------------------------------------------
def _links(spec: Spec, b):
    n = spec.n_bs
    return b * n + jnp.arange(n) if spec.link_topology == "pair" else jnp.arange(n)


def task_terms(spec: Spec, env: Env, now, current, link_free, b, size, density, result):
    """The SimPy model's linear estimate (`event_model.linear_terms`): (wait, duration, link waits)."""
    caps, rates = env.capacities, env.rates
    local = jnp.arange(spec.n_bs) == b
    es_wait = current / caps
    compute = size * density / caps
    if result is not None:
        download = result / rates
        compute = compute + (download if spec.variant.local_download else jnp.where(local, 0.0, download))
    link_wait = jnp.maximum(link_free[_links(spec, b)] - now, 0.0)
    wait = jnp.where(local, es_wait, jnp.maximum(link_wait, es_wait))
    duration = jnp.where(local, compute, compute + size / rates)
    return wait, duration, jnp.where(local, 0.0, link_wait)


def commit(spec: Spec, env: Env, now, t, state: EventState, x: Tasks, entry, fractions) -> EventState:
    """Send a task's shares on their way: the local one to its ES, the others onto their links."""
    n, rates = spec.n_bs, env.rates
    b = x.bs
    local = jnp.arange(n) == b
    share = fractions > 0.0
    remote = share & ~local
    deadline = now + env.deadline
    links = _links(spec, b)
    link_free = state.link_free[links]
    begin = jnp.maximum(link_free, now)
    delivery = begin + fractions * x.size / rates
    if spec.deadline_policy == "drop":  # removed from the link at the deadline: it never reaches the ES
        lost = remote & (delivery > deadline)
        after = jnp.where(lost, jnp.where(begin < deadline, deadline, link_free), delivery)
    else:
        lost, after = jnp.zeros(n, bool), delivery
    link_free = state.link_free.at[links].set(jnp.where(remote, after, link_free))
    work = fractions * (x.size * x.density)
    down = jnp.zeros(n) if x.result is None else fractions * x.result
    if not spec.variant.local_download:
        down = jnp.where(local, 0.0, down)
    sent = share & ~lost
    table = state.waiting
    room = table.status == EMPTY
    bucket = t if spec.deadline_policy == "drop" else 0
    row = {
        "status": jnp.full(n, WAITING),
        "arrival": jnp.where(local, now, delivery),
        "wake": jnp.where(local, now, now + (delivery - now)),
        "seq": state.seq + jnp.cumsum(share).astype(jnp.int32),
        "work": work,
        "deadline": jnp.broadcast_to(deadline, (n,)),
        "bucket": jnp.full(n, bucket, jnp.int32),
        "entry": jnp.full(n, entry, jnp.int32),
        "src": jnp.full(n, b, jnp.int32),
        "down": down,
    }
    rows = jnp.arange(n)
    return state._replace(
        waiting=_set_rows(table, rows, jnp.argmax(room, axis=1), row, sent),
        link_free=link_free,
        seq=state.seq + share.sum().astype(jnp.int32),
        pending=state.pending.at[bucket].add(work),  # 0 where there is no share: adds nothing
        jobs=state.jobs + sent,
        dropped=state.dropped.at[entry].set(state.dropped[entry] | jnp.any(lost)),
        overflow=state.overflow | jnp.any(sent & ~room.any(axis=1)),
    )


def _select(flag, new, old):
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


def estimate_context(spec: Spec, env: Env) -> KernelContext:
    """The context policies see: the event model's estimate counts only servers with a share."""
    ctx = context(spec, env)
    variant = ctx.p.variant.model_copy(update={"makespan_counts_idle": False})
    return KernelContext(ctx.p._replace(variant=variant), ctx.rule, ctx.masks, ctx.n_bs, ctx.tasks_per_slot)


def slot_step(spec: Spec, policy: JaxPolicy, env: Env, params, key, state: EventState, tasks: Tasks, t):
    """Slot ``t``: the servers advance to its start, then its tasks are decided and committed in order."""
    ctx = estimate_context(spec, env)
    now = t * env.slot_length
    horizon = spec.decision_slots * env.slot_length
    state = advance(spec, env, horizon, now, state)
    if spec.deadline_policy == "drop":
        state = state._replace(prefix=live_prefix(spec, env, now, t, state.pending))
    backlog = observed(spec, state, t)
    state = state._replace(backlog=backlog)
    prepared = None
    if policy.prepare is not None:
        view = SlotView(tasks.valid, tasks.bs, tasks.task, tasks.size, tasks.density, tasks.result, t)
        seen = slotted.SlotState(backlog, jnp.zeros_like(backlog), jnp.zeros_like(backlog))
        prepared = policy.prepare(params, task_key(key, t, PREPARE_KEY), seen, view, ctx)

    def body(state, xs):
        x, row = xs
        current = observed(spec, state, t)
        wait, duration, link_wait = task_terms(
            spec, env, now, current, state.link_free, x.bs, x.size, x.density, x.result
        )
        task = KernelTask(
            *(x.valid, x.slot, x.pos, x.bs, x.task, x.size, x.density),
            *(wait, duration, duration, row, x.result, link_wait, current),
        )
        seen = slotted.SlotState(state.backlog, current - state.backlog, jnp.zeros_like(current))
        decision = policy.decide(params, task_key(key, x.slot, x.pos), seen, task, ctx)
        subset, fractions = (jnp.asarray(a, wait.dtype) for a in decision[:2])
        aux = decision[2] if len(decision) > 2 else None
        new = commit(spec, env, now, t, state, x, t * spec.length + x.pos, fractions)
        zero = jnp.zeros((), wait.dtype)
        return _select(x.valid, new, state), Outputs(zero, jnp.bool_(False), zero, subset, fractions, aux)

    return lax.scan(body, state, (tasks, prepared))


def episode(spec: Spec, policy: JaxPolicy, queue: int, env: Env, params, key, tasks: Tasks):
    """One episode over nested entries (T, W): (outputs (T, W), (final backlog, served, overflow))."""

    def body(state, xs):
        slot_tasks, t = xs
        return slot_step(spec, policy, env, params, key, state, slot_tasks, t)

    state, out = lax.scan(body, initial_state(spec, queue), (tasks, jnp.arange(spec.decision_slots)))
    horizon = spec.decision_slots * env.slot_length
    state = advance(spec, env, horizon, horizon, state)
    t_end = spec.decision_slots
    if spec.deadline_policy == "drop":  # no bucket of slot T: the live earlier ones only
        backlog = jnp.maximum(live_prefix(spec, env, horizon, t_end, state.pending) - state.progress, 0.0)
    else:
        backlog = observed(spec, state, t_end)
    state = advance(spec, env, horizon, jnp.inf, state)  # everything still on its way
    arrival = tasks.slot * env.slot_length
    last = state.last.reshape(arrival.shape)
    dropped = state.dropped.reshape(arrival.shape)
    latency = last - arrival
    if spec.deadline_policy == "drop":
        failed = dropped
        latency = jnp.where(dropped, jnp.nan, latency)
    else:
        failed = latency > env.deadline
    fail_reward = jnp.where(jnp.isfinite(env.deadline), -env.fail_penalty * env.deadline, 0.0)
    reward = jnp.where(failed, fail_reward, -latency)
    out = out._replace(span=latency, failed=failed, reward=reward)
    return out, (backlog, state.served, state.overflow)


@lru_cache(maxsize=64)
def compiled_episodes(spec: Spec, policy: JaxPolicy, queue: int):
    """Jitted ``(env, params, keys, tasks) -> (outputs, (backlog, served, overflow))``, vmapped over replicas."""
    fn = partial(episode, spec, policy, queue)
    return jit(jax.vmap(fn, in_axes=(0, 0 if policy.batched_params else None, 0, 0)))


QUEUE = 32
"""Rows of each ES's job table in a first call; doubled (and the call rerun) while a table overflows."""

_QUEUES: dict[Spec, int] = {}  # the table size that last sufficed for a shape: reused, so kernels are too


def run_episodes(spec: Spec, policy: JaxPolicy, env: Env, params, keys, tasks: Tasks):
    """The replicas' episodes, with job tables large enough (host side; returns NumPy outputs)."""
    queue = _QUEUES.get(spec, QUEUE)
    while True:
        with x64():
            out, (backlog, served, overflow) = jax.device_get(
                compiled_episodes(spec, policy, queue)(env, params, keys, tasks)
            )
        if not np.any(overflow):
            _QUEUES[spec] = queue
            return out, backlog, served
        queue *= 2
