"""The event delay model: real FIFO queues at the edge servers and FIFO links on the core network.

Physics
-------
All tasks of slot t arrive at t·Δ and are decided in the reference order (BS 0..B-1,
then task index 0..N-1, i.e. TaskLog row order). A decision splits a task of size d
(Mbit) and density ρ (Gcycles/Mbit) into sub-tasks, one per server with a positive
fraction x_i:

* the local share (i == b) enters the queue of ES b at once;
* a remote share is first sent over a FIFO link at rate r_i (Mbit/s, indexed by the
  destination as in the reference) and needs x_i·d/r_i seconds there. With
  ``link_topology = "pair"`` each (source b, destination i) pair has its own link;
  with ``"destination"`` every source shares one link into i;
* each ES i serves its queue one job at a time at f_i Gcycles/s, work-conserving, in
  order of arrival at the ES (ties in decision order); a job needs x_i·d·ρ Gcycles.

* with result downloads (``result_range``), a finished share x_i sends x_i·res Mbit back
  to BS b over a FIFO download link at r_i (one per (ES, BS) pair, or one per ES with
  ``link_topology = "destination"``); the local share too when ``local_download``.

A task ends when its last sub-task ends (its result delivered); its latency is end − arrival.

Deadline policy: ``"keep"`` (the paper) never drops work; a task whose latency exceeds
the deadline is failed and keeps its raw latency (`TaskLog.makespan` caps it for the
paper's metric). ``"drop"`` removes, at arrival + deadline, every unfinished sub-task of
the task wherever it is (link queue, in transmission, ES queue, in service: partial
service is lost and the server moves on); the task is failed with latency NaN. A task
that finishes in time is not failed. The reward is −latency, or −fail_penalty·deadline
for a failed task, as in the slotted model.

Implementation
--------------
Links need no process of their own: jobs enter a link in decision order and a job's
transmission depends only on the jobs ahead of it (and, under "drop", on its own
deadline), so its delivery time is fixed when it is enqueued. Each remote sub-task is
one urgent timeout at its delivery instant. Each ES is one SimPy process that sleeps
on an event while its queue is empty and takes one timeout per job. Arrivals (deliveries
and slot starts) are processed before service completions of the same instant, and an
idle server is woken through an ordinary-priority event, so a server always picks the
earliest arrival present, ties in decision order. Under "drop" a queued job past its
deadline is discarded when it reaches the head of the queue (taking no time); the
observed backlog leaves it out as soon as its deadline has passed.

What schedulers see (estimates)
-------------------------------
``Observation.backlog`` is the work assigned to each ES and not yet processed at the
start of the slot (queued, in service, or in transit towards it), in Gcycles;
``current_backlog`` is the same quantity at the decision, including the slot's earlier
decisions; ``tx_backlog[i]`` is the time until the link b→i is free (0 for i == b).
The delay terms are a *linear estimate*, not the outcome: ES wait = current_backlog_i/f_i,
``wait[i]`` = max(link wait, ES wait) for a remote server and the ES wait for the local
one, ``duration[i]`` = d·ρ/f_i (+ d/r_i if remote), ``split_duration`` = ``duration``.
It ignores jobs that will overtake on the way (a later local job can reach an ES before
an earlier remote one) and, under "drop", work that will be dropped. ``obs.evaluate``
uses it with the rule that a zero-fraction server does not count in the make-span.

Learner feedback (``on_slot_end``) is given at the end of each slot, just before the
next slot's arrivals. Tasks already finished report their true latency, failure and
reward; tasks still running report an estimate: the decision-time make-span estimate,
raised to the time already elapsed when that is larger, failed if it exceeds the
deadline. Under "drop" a task expected (or certain) to miss its deadline reports failure
with latency NaN, as the log will.
"""

from __future__ import annotations

import math
from heapq import heappop, heappush

import numpy as np
import simpy
from simpy.events import Event, Timeout

from ..allocation import allocate_members, allocate_subset
from ..arrivals import Trace
from ..config import Scenario
from ..scheduling import Decision, SlotFeedback
from ..tasklog import TaskLog
from .base import DelayModel, Terms, UrgentTimeout, freeze


def linear_terms(caps, rates, backlog, link_wait, b, work, size, result=0.0, local_download=True):
    """The event model's linear delay estimate of a task at BS ``b`` (lists, one entry per ES).

    ES wait = backlog_i/f_i; a remote server's wait is the larger of that and its link's wait;
    duration = work/f_i (+ size/r_i to a remote server, + result/r_i for a download). A zero
    speed (a server or link down) gives an infinite term. Shared with the prototype's live model.
    """
    wait, duration, tx = [], [], []
    for i, (f, r) in enumerate(zip(caps, rates)):
        es_wait = backlog[i] / f if f > 0.0 else math.inf
        compute = work / f if f > 0.0 else math.inf
        if result and (i != b or local_download):
            compute += result / r if r > 0.0 else math.inf
        if i == b:
            tx.append(0.0)
            wait.append(es_wait)
            duration.append(compute)
        else:
            lw = link_wait[i]
            tx.append(lw)
            wait.append(lw if lw > es_wait else es_wait)
            duration.append(compute + (size / r if r > 0.0 else math.inf))
    return wait, duration, tx


def estimate_params(params):
    """The `SlottedParams` of the event model's make-span estimate: a server without a share does not count."""
    return params._replace(variant=params.variant.model_copy(update={"makespan_counts_idle": False}))


class EventModel(DelayModel):
    """Event-driven delay model; see the module docstring for the physics and the estimates."""

    def __init__(self, scenario: Scenario, scheduler):
        super().__init__(scenario, scheduler)
        self.estimate_params = estimate_params(self.params)  # what obs.evaluate uses
        n = self.n
        self._caps = [float(f) for f in scenario.capacities]
        self._rates = [float(r) for r in scenario.rates]
        self._dt = float(scenario.slot_length)
        self._deadline = scenario.deadline_s
        self._drop = scenario.deadline_policy == "drop"
        self._pair = scenario.link_topology == "pair"
        self._local_download = self.params.variant.local_download
        self._horizon = self.horizon
        self._served = [0.0] * n  # Gcycles processed within [0, horizon]
        self._total = [0.0] * n  # Gcycles processed in all, including after the horizon
        self.n_recorded = 0  # tasks whose outcome has been written to the log

    @property
    def served(self) -> np.ndarray:
        """Gcycles processed by each ES within [0, horizon] (partial service counted)."""
        return np.array(self._served)

    @property
    def total_served(self) -> np.ndarray:
        """Gcycles processed by each ES over the whole run, after the horizon included."""
        return np.array(self._total)

    # -- setup -------------------------------------------------------------------------------------
    def start(self, env: simpy.Environment, log: TaskLog) -> None:
        super().start(env, log)
        n, n_tasks = self.n, len(log)
        self._env = env
        self._bs = log.bs.tolist()
        self._size = log.size.tolist()
        self._density = log.density.tolist()
        self._result = None if log.result is None else log.result.tolist()
        self._down_free = [0.0] * (n * n if self._pair else n)  # when each download link is free
        self._arrival = log.arrival.tolist()
        self._queues = [
            [] for _ in range(n)
        ]  # ES heaps of (arrival, seq, work, task, deadline, bucket, result Mbit)
        self._idle = [None] * n  # the event a sleeping server waits on
        self._cur_work = [0.0] * n  # job in service: work (0 when idle), start, deadline
        self._cur_start = [0.0] * n
        self._cur_deadline = [math.inf] * n
        self._link_free = [0.0] * (n * n if self._pair else n)  # when each link finishes its last job
        # Work assigned to each ES and not yet processed, by bucket: one bucket under "keep",
        # one per slot under "drop" (a slot's bucket leaves the backlog at its deadline).
        n_buckets = 1 if not self._drop else self.scenario.decision_slots
        self._pending = [[0.0] * n for _ in range(n_buckets)]
        self._jobs = [0] * n  # jobs towards / at each ES (keep: reset the bucket to 0 when none left)
        self._live_from = 0
        self._seq = 0
        self._remaining = [0] * n_tasks  # unresolved sub-tasks per task
        self._last = [0.0] * n_tasks  # latest sub-task end
        self._dropped = [False] * n_tasks
        self._finished = np.zeros(n_tasks, dtype=bool)
        self._estimate = np.full(n_tasks, np.nan)  # decision-time make-span estimate
        self._seen = self.profile is not None and self.scenario.faults.observable
        self._speeds: tuple = (None, None, None)  # (instant, capacities, rates) under faults
        self._done_cache: dict[tuple, float] = {}
        for i in range(n):
            env.process(self._server(env, i))

    # -- state seen by schedulers ------------------------------------------------------------------
    def _backlog_now(self, now: float) -> list[float]:
        """Gcycles assigned to each ES and not yet processed at ``now`` (a slot start)."""
        caps, cur_work = self._caps, self._cur_work
        if self._drop:
            lo = self._live_from
            dt, deadline = self._dt, self._deadline
            while lo < len(self._pending) and lo * dt + deadline <= now:
                lo += 1
            self._live_from = lo
            hi = min(round(now / dt) + 1, len(self._pending))
            live = self._pending[lo:hi]
            backlog = [sum(bucket[i] for bucket in live) for i in range(self.n)]
            cur_deadline = self._cur_deadline
        else:
            backlog = list(self._pending[0])
            cur_deadline = None
        for i in range(self.n):
            w = cur_work[i]
            if w > 0.0 and (cur_deadline is None or cur_deadline[i] > now):
                if self.profile is None:
                    done = (now - self._cur_start[i]) * caps[i]
                else:
                    done = self._done_in_service(i, now)
                backlog[i] -= w if done > w else done
            if backlog[i] < 0.0:
                backlog[i] = 0.0
        return backlog

    def _speeds_at(self, now: float) -> tuple[list[float], list[float]]:
        """Current capacities and rates under faults (cached per instant: a slot's tasks share it)."""
        if self._speeds[0] != now:
            profile = self.profile
            caps = [f * profile.factor_at("server", i, now) for i, f in enumerate(self._caps)]
            rates = [r * profile.factor_at("link", i, now) for i, r in enumerate(self._rates)]
            self._speeds = (now, caps, rates)
        return self._speeds[1], self._speeds[2]

    def _done_in_service(self, i: int, now: float) -> float:
        """Gcycles of ES ``i``'s job in service done by ``now`` under faults (cached per job and instant)."""
        key = (i, self._cur_start[i], now)
        if key not in self._done_cache:
            if len(self._done_cache) > 4 * self.n:
                self._done_cache.clear()
            self._done_cache[key] = self.profile.done("server", i, self._cur_start[i], now, self._caps[i])
        return self._done_cache[key]

    def backlog_at(self, now: float) -> np.ndarray:
        backlog = np.array(self._backlog_now(now))
        freeze(backlog)
        return backlog

    def _terms(self, now: float, b: int, size: float, density: float, result: float = 0.0):
        """Linear delay estimate (wait, duration) and the state behind it, as Python lists; ``result``:
        Mbit to download (its link's queue is left out of the estimate)."""
        caps, rates = self._caps, self._rates
        if self._seen:  # observable faults: the current speeds (0 while down: infinite terms)
            caps, rates = self._speeds_at(now)
        backlog = self._backlog_now(now)
        base = b * self.n if self._pair else 0
        link_wait = [max(self._link_free[base + i] - now, 0.0) for i in range(self.n)]
        wait, duration, tx = linear_terms(
            caps, rates, backlog, link_wait, b, size * density, size, result, self._local_download
        )
        return wait, duration, backlog, tx

    def _result_of(self, k: int) -> float:
        return 0.0 if self._result is None else self._result[k]

    def terms(self, now: float, k: int) -> Terms:
        wait, duration, current, tx = self._terms(
            now, self._bs[k], self._size[k], self._density[k], self._result_of(k)
        )
        wait_a, duration_a = np.array(wait), np.array(duration)
        terms = Terms(wait_a, duration_a, duration_a, np.array(current), np.array(tx), extra=(wait, duration))
        freeze(*terms[:5])
        return terms

    @staticmethod
    def _span_estimate(wait, duration, fractions) -> float:
        return max(w + x * d for w, d, x in zip(wait, duration, fractions) if x > 0.0)

    # -- decisions ---------------------------------------------------------------------------------
    def commit(
        self, now: float, t: int, k: int, subset: np.ndarray, fractions: np.ndarray, terms: Terms
    ) -> None:
        wait, duration = terms.extra
        fractions = fractions.tolist()
        self._estimate[k] = self._span_estimate(wait, duration, fractions)
        self._commit(now, t, k, self._bs[k], self._size[k], self._density[k], fractions)

    def commit_slot(self, now: float, t: int, rows: slice, decision: Decision) -> None:
        bs, sizes, densities = self._bs, self._size, self._density
        if decision.fractions is not None:
            all_fractions = decision.fractions.tolist()
            for j, k in enumerate(range(rows.start, rows.stop)):
                fractions = all_fractions[j]
                if self.on_slot_end is not None:
                    wait, duration, _, _ = self._terms(now, bs[k], sizes[k], densities[k], self._result_of(k))
                    self._estimate[k] = self._span_estimate(wait, duration, fractions)
                self._commit(now, t, k, bs[k], sizes[k], densities[k], fractions)
            return
        rule = self.scenario.allocation
        shares = []
        for k, row in zip(range(rows.start, rows.stop), decision.subset.tolist()):
            wait, duration, _, _ = self._terms(now, bs[k], sizes[k], densities[k], self._result_of(k))
            if self.profile is None:
                fractions = allocate_members(rule, wait, duration, [i for i, v in enumerate(row) if v > 0.0])
            else:  # terms may be infinite
                fractions = allocate_subset(rule, wait, duration, np.asarray(row), guard=True).tolist()
            shares.append(fractions)
            self._estimate[k] = self._span_estimate(wait, duration, fractions)
            self._commit(now, t, k, bs[k], sizes[k], densities[k], fractions)
        self.log.fractions[rows] = shares

    # -- execution ---------------------------------------------------------------------------------
    def _commit(self, now: float, t: int, k: int, b: int, size: float, density: float, fractions) -> None:
        """Send task ``k``'s sub-tasks on their way (decision instant ``now``)."""
        env, drop = self._env, self._drop
        deadline = now + self._deadline
        bucket = t if drop else 0
        pending = self._pending[bucket]
        jobs = self._jobs
        link_free, rates = self._link_free, self._rates
        base = b * self.n if self._pair else 0
        work = size * density
        result = self._result_of(k)
        n_sub = 0
        for i, x in enumerate(fractions):
            if x <= 0.0:
                continue
            self._seq += 1
            w = x * work
            down = x * result if i != b or self._local_download else 0.0
            pending[i] += w  # in transit or queued: part of ES i's backlog
            if i == b:
                n_sub += 1
                jobs[i] += 1
                self._enqueue(i, (now, self._seq, w, k, deadline, bucket, down))
                continue
            link = base + i
            begin = link_free[link]
            if begin < now:
                begin = now
            if self.profile is None:
                end = begin + x * size / rates[i]
            else:
                end = self.profile.finish("link", i, begin, x * size, rates[i])
            if drop and end > deadline:
                # removed from the link at the deadline: it never reaches ES i, and its bucket
                # leaves the observed backlog at that instant
                if begin < deadline:
                    link_free[link] = deadline
                self._dropped[k] = True
                continue
            link_free[link] = end
            n_sub += 1
            jobs[i] += 1
            delivery = UrgentTimeout(env, end - now, (i, end, self._seq, w, k, deadline, bucket, down))
            delivery.callbacks.append(self._deliver)
        self._remaining[k] = n_sub
        if n_sub == 0:
            self._record(k)

    def _deliver(self, event) -> None:
        i, end, seq, w, k, deadline, bucket, down = event._value
        self._enqueue(i, (end, seq, w, k, deadline, bucket, down))

    def _enqueue(self, i: int, job: tuple) -> None:
        heappush(self._queues[i], job)
        idle = self._idle[i]
        if idle is not None:
            self._idle[i] = None
            idle.succeed()  # ordinary priority: every arrival of this instant is queued first

    def _server(self, env: simpy.Environment, i: int):
        """ES ``i``: FIFO by arrival at the ES, one job at a time at f_i Gcycles/s (f_i·c_i(t) under faults,
        c_i being the fault profile's factor)."""
        queue, f, profile = self._queues[i], self._caps[i], self.profile
        drop, horizon = self._drop, self._horizon
        served, total, jobs = self._served, self._total, self._jobs
        cur_work, cur_start, cur_deadline = self._cur_work, self._cur_start, self._cur_deadline
        remaining, last = self._remaining, self._last
        while True:
            if not queue:
                self._idle[i] = idle = Event(env)
                yield idle
            _, _, w, k, deadline, bucket, down = heappop(queue)
            start = env.now
            if drop and deadline <= start:
                jobs[i] -= 1
                self._subtask_dropped(k)
                continue
            cur_work[i], cur_start[i], cur_deadline[i] = w, start, deadline
            if profile is None:
                service = w / f
                end = start + service  # what env.now will be after Timeout(service)
            else:
                end = profile.finish("server", i, start, w, f)
                service = end - start
            if drop and end > deadline:
                yield Timeout(env, deadline - start)
                cur_work[i] = 0.0
                cut = deadline if deadline < horizon else horizon
                if profile is None:
                    total[i] += (deadline - start) * f
                    if start < horizon:
                        served[i] += (cut - start) * f
                else:
                    total[i] += profile.done("server", i, start, deadline, f)
                    if start < horizon:
                        served[i] += profile.done("server", i, start, cut, f)
                jobs[i] -= 1
                self._subtask_dropped(k)
                continue
            yield Timeout(env, service)
            cur_work[i] = 0.0
            total[i] += w
            if end <= horizon:
                served[i] += w
            elif start < horizon:
                served[i] += (
                    (horizon - start) * f if profile is None else profile.done("server", i, start, horizon, f)
                )
            # the job's bookkeeping, inline (a call per job costs ~10% of the event model's time)
            pending = self._pending[bucket]
            pending[i] -= w
            jobs[i] -= 1
            if not drop and jobs[i] == 0:
                pending[i] = 0.0  # nothing left towards ES i: clear rounding residue
            if down > 0.0:
                self._download(i, k, end, down, deadline)
                continue
            remaining[k] -= 1
            if end > last[k]:
                last[k] = end
            if remaining[k] == 0:
                self._record(k)

    def _download(self, i: int, k: int, start: float, mbit: float, deadline: float) -> None:
        """Send ``mbit`` of task ``k``'s result from ES ``i`` back to its BS, FIFO on the download link."""
        b = self._bs[k]
        link = i * self.n + b if self._pair else i
        begin = self._down_free[link]
        if begin < start:
            begin = start
        rate = self._rates[i]
        end = (
            begin + mbit / rate if self.profile is None else self.profile.finish("link", i, begin, mbit, rate)
        )
        if self._drop and end > deadline:
            if begin < deadline:
                self._down_free[link] = deadline
            self._subtask_dropped(k)
            return
        self._down_free[link] = end
        delivered = UrgentTimeout(self._env, end - start, (k, end))
        delivered.callbacks.append(self._downloaded)

    def _downloaded(self, event) -> None:
        k, end = event._value
        self._remaining[k] -= 1
        if end > self._last[k]:
            self._last[k] = end
        if self._remaining[k] == 0:
            self._record(k)

    def _subtask_dropped(self, k: int) -> None:
        self._dropped[k] = True
        self._remaining[k] -= 1
        if self._remaining[k] == 0:
            self._record(k)

    def _record(self, k: int) -> None:
        """Write task ``k``'s outcome to the log (exactly once)."""
        if self._finished[k]:
            raise RuntimeError(f"task {k} recorded twice")
        self._finished[k] = True
        self.n_recorded += 1
        if self._dropped[k]:
            self.record_outcome(k, math.nan, True, self.fail_reward)
            return
        latency = self._last[k] - self._arrival[k]
        failed = (not self._drop) and latency > self._deadline
        self.record_outcome(k, latency, failed, self.fail_reward if failed else -latency)

    # -- learner feedback --------------------------------------------------------------------------
    def feedback(self, t: int, backlog: np.ndarray, next_backlog: np.ndarray, trace: Trace) -> SlotFeedback:
        """Slot ``t``'s feedback at the end of the slot: true outcomes where known, estimates otherwise."""
        log = self.log
        rows = log.slot_rows(t)
        now = (t + 1) * self._dt
        arrival = t * self._dt
        finished = self._finished[rows]
        latency = log.latency[rows].copy()
        failed = log.failed[rows].copy()
        reward = log.reward[rows].copy()
        running = ~finished
        if running.any():
            doomed = np.array(self._dropped[rows], dtype=bool)
            if self._drop and now >= arrival + self._deadline:
                doomed[:] = True
            doomed &= running
            guess = np.maximum(self._estimate[rows], now - arrival)
            late = guess > self._deadline
            if self._drop:  # a task that misses its deadline is dropped
                late = late | doomed
                guess = np.where(late, np.nan, guess)
            latency = np.where(running, guess, latency)
            failed = np.where(running, late, failed)
            reward = np.where(running, np.where(late, self.fail_reward, -np.nan_to_num(guess)), reward)
        return log.slot_feedback(
            t, backlog, next_backlog, trace, latency=latency, failed=failed, reward=reward
        )
