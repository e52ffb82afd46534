"""The event delay model compiled: FIFO links and FIFO edge servers as fixed-size JAX state.

It computes what `mecsim.models.event_model` computes (that module's docstring has the
physics), scanned over a replica's slots and their tasks and vmapped over replicas:

* a remote share's delivery is fixed when it is committed (each link is FIFO in decision
  order), exactly as the SimPy path computes it;
* at each slot start every ES schedules, in order of arrival at the ES (ties in decision
  order), every share that has arrived by then: those of the slot just decided and those
  still waiting from earlier slots. This is exact because every later decision arrives at
  or after that instant and comes later in decision order, so no share not yet known can
  go before it: a later local share overtakes an earlier remote one still on the wire
  exactly when it arrives first. Shares not yet arrived wait in one FIFO queue per (ES,
  source BS), whose heads are merged;
* the scheduled shares of each ES form a ring in order of service (which is also their
  order of completion); the SimPy model's bookkeeping of assigned and not yet processed
  work (``pending``) is kept with the same additions and subtractions in the same order,
  so schedulers observe the same numbers to the bit and break ties alike;
* result downloads are scheduled with the share that produces them (each download link is
  fed by one ES, in its completion order).

Faults (``Env.profile``, `fault_speeds`) change how long work takes: a job's finish, a
transfer's delivery and the work done by an instant step through the target's segments of
constant speed, as the SimPy path does.

A queue or ring that would overflow, or a finish past the drawn fault realisation, sets a flag;
`event_episode.run_episodes` then runs the group again with larger ones, so a result is never
silently wrong. The decisions and the episode are in `event_episode`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import fault_speeds
from .fault_speeds import LINK, SERVER
from .shape import Env, Spec

NO_ENTRY = np.iinfo(np.int32).max
REPLICAS = "replicas"  # the name of the vmapped axis over replicas (`first_steps`)
OVERFLOWS = ("queue", "ring", "steps", "faults")  # what `EventState.overflow` flags, in order
FAULTS_FLAG = OVERFLOWS.index("faults")


def faults_of(spec: Spec, env: Env):
    """The replica's `fault_speeds.FaultSpeeds`, or None without faults."""
    return env.profile if spec.faults else None


class Shares(NamedTuple):
    """Shares sent to the ESs and not yet scheduled: a slot's new ones, each field (B, W), or the queues
    from each source BS to each ES, each field (B, B, J). ``entry`` is the task's entry (slot·W +
    position), -1 for no share. Each queue is in order of arrival: a link is FIFO in decision order."""

    entry: Any
    arrival: Any  # at the ES: the order of service (ties in decision order, i.e. by entry)
    work: Any  # Gcycles
    down: Any  # Mbit of result downloaded once served


class Ring(NamedTuple):
    """Per-ES rings of scheduled shares not yet completed, in order of service, each field (B, J)."""

    start: Any
    end: Any  # when the server lets it go: end of service, of the cut at the deadline, or (discarded) its start
    work: Any
    done: Any  # served in full
    entry: Any


class EventState(NamedTuple):
    """One replica's state between slots (and, during a slot, between decisions)."""

    sent: Shares  # (B ES, B sources, J) queues of shares sent and not yet scheduled
    sent_head: Any  # (B, B) queue position of each queue's first share
    sent_size: Any  # (B, B) shares in each queue
    ring: Ring
    head: Any  # (B,) ring position of the first scheduled share
    size: Any  # (B,) scheduled shares in the ring
    free: Any  # (B,) when each server has finished what it has been scheduled
    link_free: Any  # (L,) when each upload link is free (L = B·B pairs, or B destinations)
    down_free: Any  # (L,) the same for the download links
    pending: Any  # (1 or T, B) Gcycles assigned and not processed: one bucket, or one per slot ("drop")
    jobs: Any  # (B,) shares towards or at each ES ("keep": the bucket is reset to 0 when none is left)
    prefix: Any  # (B,) "drop": the live buckets of earlier slots, summed at the slot start
    progress: Any  # (B,) Gcycles of the share in service done at the slot start
    backlog: Any  # (B,) Gcycles observed at the slot start
    served: Any  # (B,) Gcycles processed within the horizon
    last: Any  # (T·W,) latest end of each task's shares (its result delivered)
    dropped: Any  # (T·W,) a share of the task was dropped at an ES or on a download link
    unscheduled: Any  # (T·W,) shares of the task sent and not yet scheduled
    resolved: Any  # (T·W,) when the task's last scheduled share is resolved (done, delivered or dropped)
    dropped_at: Any  # (T·W,) when a share of the task was first dropped at an ES or its download (else +inf)
    overflow: Any  # (4,) too many: sent shares for a queue, shares for a ring, shares at one slot start;
    # and a finish past the drawn fault realisation (`OVERFLOWS`)


def no_shares(*shape: int) -> Shares:
    zeros = jnp.zeros(shape)
    return Shares(jnp.full(shape, -1, jnp.int32), zeros, zeros, zeros)


def initial_state(spec: Spec, sizes: tuple[int, int, int]) -> EventState:
    """``sizes``: rows of each queue of sent shares and of each ES's ring, and shares scheduled at once (`event_episode.SIZES`)."""
    b, n_links = spec.n_bs, spec.n_bs * spec.n_bs if spec.link_topology == "pair" else spec.n_bs
    table, queue, _ = sizes
    zeros = jnp.zeros((b, queue))
    ring = Ring(zeros, zeros, zeros, jnp.zeros((b, queue), bool), jnp.zeros((b, queue), jnp.int32))
    entries = spec.decision_slots * spec.length
    return EventState(
        no_shares(b, b, table),
        jnp.zeros((b, b), jnp.int32),
        jnp.zeros((b, b), jnp.int32),
        ring,
        head=jnp.zeros(b, jnp.int32),
        size=jnp.zeros(b, jnp.int32),
        free=jnp.zeros(b),
        link_free=jnp.zeros(n_links),
        down_free=jnp.zeros(n_links),
        pending=jnp.zeros((spec.decision_slots if spec.deadline_policy == "drop" else 1, b)),
        jobs=jnp.zeros(b, jnp.int32),
        prefix=jnp.zeros(b),
        progress=jnp.zeros(b),
        backlog=jnp.zeros(b),
        served=jnp.zeros(b),
        last=jnp.zeros(entries),
        dropped=jnp.zeros(entries, bool),
        unscheduled=jnp.zeros(entries, jnp.int32),
        resolved=jnp.zeros(entries),
        dropped_at=jnp.full(entries, jnp.inf),
        overflow=jnp.zeros(len(OVERFLOWS), bool),
    )


LOOP_UP_TO = 32
"""Up to this many replicas vmapped together, `first_steps` loops over the steps it runs; beyond, it scans
them all and branches past the skipped ones. Measured on a 2-core Xeon (greedy optimal and AMCoEdge, event
model, default point, one compiled call): the loop took 0.45-0.75 of a full scan's time at 1-16 replicas,
and 0.8-0.9 of branching's at 32; at 64 it took 1.1 of branching's, whose outputs keep the scan's layout
(the loop writes each step's row into every replica's buffer apart)."""


def first_steps(step, init, xs, count, length: int):
    """``lax.scan(step, init, xs, length=length)`` that runs only its first ``count`` steps, ``count`` taken
    as its largest over the replicas vmapped together (axis `REPLICAS`). The steps after a replica's own
    ``count`` must leave its carry alone (padding, shares not yet arrived), so skipping them changes
    nothing. One count for all replicas keeps the loop's test a scalar under vmap, where a per-replica
    one would run every step and select. Returns (carry, outputs), zeros for the skipped steps."""
    count = jnp.minimum(lax.pmax(count, REPLICAS), length)
    row = lambda k: jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, k, keepdims=False), xs)  # noqa: E731
    shapes = jax.eval_shape(lambda c: step(c, row(0))[1], init)
    zeros = lambda *lead: jax.tree.map(lambda s: jnp.zeros((*lead, *s.shape), s.dtype), shapes)  # noqa: E731
    if lax.psum(1, REPLICAS) > LOOP_UP_TO:

        def branch(carry, k):
            return lax.cond(k < count, lambda c: step(c, row(k)), lambda c: (c, zeros()), carry)

        return lax.scan(branch, init, jnp.arange(length))

    def loop(k, carry_outputs):
        carry, outputs = carry_outputs
        carry, out = step(carry, row(k))
        return carry, jax.tree.map(lambda b, v: lax.dynamic_update_index_in_dim(b, v, k, 0), outputs, out)

    return lax.fori_loop(0, count, loop, (init, zeros(length)))


# -- the servers -----------------------------------------------------------------------------------
def enqueue(spec: Spec, bs, state: EventState, fresh: Shares) -> EventState:
    """Append a slot's new shares (B, W) to the queues of their (ES, source BS), in decision order."""
    n = spec.n_bs
    table = state.sent.entry.shape[2]
    valid = fresh.entry >= 0
    src = bs[jnp.maximum(fresh.entry, 0)]  # (B, W)
    mine = valid[:, None, :] & (src[:, None, :] == jnp.arange(n)[None, :, None])  # (B ES, B src, W)
    count = mine.sum(axis=2)
    pos = (state.sent_head + state.sent_size)[:, :, None] + jnp.cumsum(mine, axis=2) - 1
    es = jnp.broadcast_to(jnp.arange(n)[:, None], src.shape)
    at = jnp.where(valid, jnp.take_along_axis(pos, src[:, None, :], axis=1)[:, 0] % table, table)
    sent = jax.tree.map(lambda q, v: q.at[es, src, at].set(v, mode="drop"), state.sent, fresh)
    full = jnp.any(state.sent_size + count > table)
    return state._replace(
        sent=sent,
        sent_size=state.sent_size + count.astype(jnp.int32),
        overflow=state.overflow.at[0].set(state.overflow[0] | full),
    )


def schedule(spec: Spec, env: Env, bs, target, state: EventState, steps: int) -> EventState:
    """Every ES schedules, in order of arrival (then entry), the sent shares arrived by ``target`` (all of
    them for +inf): a merge of its queues, whose heads are compared at each step. ``bs``: (T·W,) each
    entry's BS; ``steps``: how many shares an ES may schedule at once (more sets the overflow flag)."""
    n, caps, rates, width = spec.n_bs, env.capacities, env.rates, spec.length
    drop = spec.deadline_policy == "drop"
    horizon = spec.decision_slots * env.slot_length
    table, queue = state.sent.entry.shape[2], state.ring.start.shape[1]
    rows = jnp.arange(n)
    pair = spec.link_topology == "pair"
    faults = faults_of(spec, env)

    def heads(taken):
        """Each queue's next share: its position, (arrival, entry) (B, B), and whether there is one."""
        at = (state.sent_head + taken) % table
        arrival = jnp.take_along_axis(state.sent.arrival, at[:, :, None], axis=2)[:, :, 0]
        entry = jnp.take_along_axis(state.sent.entry, at[:, :, None], axis=2)[:, :, 0]
        return at, arrival, entry, taken < state.sent_size

    sources = jnp.arange(n)

    def step(carry, _):
        # one share per ES: the earliest arrival among the queue heads (ties: the earlier entry); the heads
        # travel in the carry, and only the chosen queue's is read anew
        taken, at, head_arrival, head_entry, free, down_free, beyond = carry
        here = (taken < state.sent_size) & (head_arrival <= target)
        arrival = jnp.where(here, head_arrival, jnp.inf)
        earliest = arrival == arrival.min(axis=1, keepdims=True)
        src = jnp.argmin(jnp.where(here & earliest, head_entry, NO_ENTRY), axis=1)
        pos = at[rows, src]
        job = jax.tree.map(lambda q: q[rows, src, pos], state.sent)
        active = here[rows, src]
        chosen = (sources == src[:, None]) & active[:, None]
        taken = taken + chosen
        following = (pos + 1) % table
        at = jnp.where(chosen, following[:, None], at)
        head_arrival = jnp.where(chosen, state.sent.arrival[rows, src, following][:, None], head_arrival)
        head_entry = jnp.where(chosen, state.sent.entry[rows, src, following][:, None], head_entry)
        decided = (jnp.maximum(job.entry, 0) // width) * env.slot_length
        dl = decided + env.deadline
        begin = jnp.maximum(free, decided + (job.arrival - decided))  # when SimPy's idle server wakes
        if faults is None:
            finish = begin + job.work / caps  # as SimPy's clock: start + w/f
            clock = finish
        else:
            finish = fault_speeds.finish(faults, SERVER, caps, begin, job.work)
            clock = begin + (finish - begin)  # SimPy's clock after a timeout of finish - start
            beyond = beyond | fault_speeds.beyond(faults, finish, active)
        free_after, done = clock, jnp.ones(n, bool)
        if drop:
            head_drop = dl <= begin  # past its deadline when its turn comes: discarded, no time taken
            cut = ~head_drop & (finish > dl)  # cut at the deadline, partial service lost
            free_after = jnp.where(head_drop, begin, jnp.where(cut, begin + (dl - begin), clock))
            finish = jnp.where(head_drop, begin, jnp.where(cut, dl, finish))
            done = ~head_drop & ~cut
        got = finish
        lost = jnp.zeros(n, bool)
        resolve = free_after  # a share dropped at the ES: when the server lets it go
        if spec.downloads:  # the result goes back to the task's BS, FIFO on this ES's download link
            link = rows * n + src if pair else rows
            sending = jnp.maximum(down_free[link], finish)
            fetch = active & done & (job.down > 0.0)
            if faults is None:
                got = sending + job.down / rates
            else:  # the links out of ES i run at ES i's link factor, as those into it
                got = fault_speeds.finish(faults, LINK, rates, sending, job.down)
                beyond = beyond | fault_speeds.beyond(faults, got, fetch)
            after = got
            if drop:  # a result that would arrive after the deadline is dropped there
                lost = fetch & (got > dl)
                after = jnp.where(lost, jnp.where(sending < dl, dl, down_free[link]), got)
            got = jnp.where(fetch, got, finish)
            down_free = down_free.at[jnp.where(fetch, link, down_free.shape[0])].set(after, mode="drop")
        free = jnp.where(active, free_after, free)
        resolve = jnp.where(done & ~lost, got, jnp.where(lost, finish, resolve))
        out = (
            active,
            job.entry,
            job.work,
            begin,
            finish,
            free_after,
            done,
            active & done & ~lost,
            got,
            resolve,
        )
        return (taken, at, head_arrival, head_entry, free, down_free, beyond), out

    taken = jnp.zeros((n, n), jnp.int32)
    init = (taken, *heads(taken)[:3], state.free, state.down_free, jnp.bool_(False))
    # as many steps as the ES with most shares arrived by then: the merge takes no other (and, each queue
    # being in order of arrival, takes them all)
    queued = (jnp.arange(table) - state.sent_head[:, :, None]) % table < state.sent_size[:, :, None]
    arrived = (queued & (state.sent.arrival <= target)).sum(axis=(1, 2)).max()
    (taken, *_, free, down_free, beyond), columns = first_steps(step, init, None, arrived, steps)
    active, entry, work, start, end, let_go, done, completed, finish, resolve = (a.T for a in columns)
    until = jnp.minimum(end, horizon)
    if faults is None:
        partial_work = (until - start) * caps[:, None]
    else:
        partial_work = fault_speeds.done(faults, SERVER, caps, start, until)
    served = jnp.where(done & (end <= horizon), work, jnp.where(start < horizon, partial_work, 0.0))
    # the scheduled shares join each ES's ring, in order of service
    n_ready = active.sum(axis=1).astype(jnp.int32)
    at = jnp.where(active, ((state.head + state.size)[:, None] + jnp.arange(steps)) % queue, queue)
    ring = Ring(start, let_go, work, done, entry)
    ring = jax.tree.map(lambda a, v: a.at[rows[:, None], at].set(v, mode="drop"), state.ring, ring)
    n_entries = state.last.shape[0]
    last = state.last.at[jnp.where(completed, entry, n_entries)].max(finish, mode="drop")
    dropped = state.dropped.at[jnp.where(active & ~completed, entry, n_entries)].set(True, mode="drop")
    scheduled = jnp.where(active, entry, n_entries)
    unscheduled = state.unscheduled.at[scheduled].add(-1, mode="drop")
    resolved = state.resolved.at[scheduled].max(resolve, mode="drop")
    dropped_at = state.dropped_at.at[jnp.where(active & ~completed, entry, n_entries)].min(
        resolve, mode="drop"
    )
    _, arrival, _, left = heads(taken)
    still = left & (arrival <= target)
    overflow = jnp.stack([False, jnp.any(state.size + n_ready > queue), jnp.any(still), beyond])
    return state._replace(
        sent_head=(state.sent_head + taken) % table,
        sent_size=state.sent_size - taken,
        ring=ring,
        size=state.size + n_ready,
        free=free,
        down_free=down_free,
        served=state.served + jnp.where(active, served, 0.0).sum(axis=1),
        last=last,
        dropped=dropped,
        unscheduled=unscheduled,
        resolved=resolved,
        dropped_at=dropped_at,
        overflow=state.overflow | overflow,
    )


def complete(spec: Spec, now, state: EventState) -> EventState:
    """Let go of the scheduled shares that ended before ``now``, in order of completion, with SimPy's
    bookkeeping at each end (subtractions in that order: the same rounding)."""
    rows = jnp.arange(spec.n_bs)
    ring, queue = state.ring, state.ring.start.shape[1]
    ended = (jnp.arange(queue) < state.size[:, None]) & (
        jnp.take_along_axis(ring.end, (state.head[:, None] + jnp.arange(queue)) % queue, axis=1) < now
    )
    count = jnp.cumprod(ended, axis=1).sum(axis=1).astype(jnp.int32)  # from the head, in order of service

    def one(carry):
        # only the bookkeeping travels through the loop (a vmapped loop selects its whole carry each step)
        k, pending, jobs = carry
        at = (state.head + k) % queue
        active = k < count
        take = active & ring.done[rows, at]
        bucket = ring.entry[rows, at] // spec.length if spec.deadline_policy == "drop" else 0
        pending = pending.at[bucket, rows].add(jnp.where(take, -ring.work[rows, at], 0.0))
        jobs = jobs - active
        if spec.deadline_policy != "drop":  # nothing left towards the ES: clear the rounding residue
            pending = jnp.where(active & (jobs == 0), 0.0, pending)
        return k + 1, pending, jobs

    init = (jnp.int32(0), state.pending, state.jobs)
    _, pending, jobs = lax.while_loop(lambda c: c[0] < count.max(), one, init)
    return state._replace(
        head=(state.head + count) % queue, size=state.size - count, pending=pending, jobs=jobs
    )


def advance(spec: Spec, env: Env, bs, now, state: EventState, fresh: Shares, steps: int) -> EventState:
    """Bring the servers to ``now``: schedule every share arrived by then, let go of those ended before it,
    and take the progress of the share in service."""
    state = schedule(spec, env, bs, now, enqueue(spec, bs, state, fresh), steps)
    state = complete(spec, now, state)
    rows = jnp.arange(spec.n_bs)
    first = jax.tree.map(lambda a: a[rows, state.head], state.ring)
    in_service = (state.size > 0) & (first.start < now)
    if spec.deadline_policy == "drop":
        deadline = (first.entry // spec.length) * env.slot_length + env.deadline
        in_service = in_service & (deadline > now)
    faults = faults_of(spec, env)
    if faults is None:
        done = (now - first.start) * env.capacities
    else:
        done = fault_speeds.done(faults, SERVER, env.capacities, first.start, jnp.full(spec.n_bs, now))
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


def close(spec: Spec, env: Env, bs, t, state: EventState, fresh: Shares, steps: int) -> EventState:
    """The start of slot ``t`` (or the horizon, t = T): the servers advance to it with the shares of the
    slot before (``fresh``), and the backlog the slot's decisions observe is taken."""
    now = t * env.slot_length
    state = advance(spec, env, bs, now, state, fresh, steps)
    if spec.deadline_policy == "drop":  # slot t's own bucket is still empty
        prefix = live_prefix(spec, env, now, t, state.pending)
        return state._replace(prefix=prefix, backlog=jnp.maximum(prefix - state.progress, 0.0))
    return state._replace(backlog=jnp.maximum(state.pending[0] - state.progress, 0.0))
