"""The dispatcher: mecsim's slot loop in real time, executing each decision on the Dask workers.

`LiveModel` is a delay model (`mecsim.models.base.DelayModel`) whose physics is the real
system: the same slot loop, observations, validation and allocation as the simulator, run on a
SimPy real-time environment (one simulated second = one second), with ``commit`` sending the
work to the edge servers. So any registered scheduler runs unchanged.

A decision's fractions become integer sub-batches (largest remainder; the realised fractions
are what the log records, the decided ones are kept beside them). Per sub-batch, three Dask
tasks: ``make_part`` on the BS's own worker (the request's images arrive there), ``repair_part``
on the chosen ES (so a remote share's bytes cross that ES's shaped link), and ``fetch`` on the
BS's worker (the result comes back; its time there ends the sub-task). A task ends with its
last sub-task. A worker has two threads: ``repair_part`` holds the ES's one resource unit (the
ES serves one sub-batch at a time, as in the model), so ``make_part`` and ``fetch`` never wait
behind repairs.

What schedulers see is built from the live state, as the event model builds its estimate:
each ES's outstanding work (sub-batches sent to it and not yet back, in core-seconds) and when
each link is expected to be free (uploads committed at the scenario's rates).

Failures: a sub-batch whose ES died (Dask reports a killed worker, or no worker for its
resource after ``no-workers-timeout``) is sent again, to its BS's own ES when that is alive,
else to the alive ES with the least queued time; a task whose BS's worker died (its input is
lost) is recorded as failed. Every task ends recorded exactly once, finished or failed; none
waits longer than ``drain_timeout_s``.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from dataclasses import dataclass, field

import numpy as np
import simpy.rt

from ..models.base import DelayModel, Terms, freeze
from ..models.event_model import linear_terms
from ..scheduling import Decision
from ..tasklog import TaskLog
from . import service
from .config import PrototypeConfig
from .errors import PrototypeError
from .requests import Requests, largest_remainder

INFRASTRUCTURE_ERRORS = {
    "KilledWorker",
    "NoValidWorkerError",
    "CancelledError",
    "FutureCancelledError",
    "CommClosedError",
}
MAX_ATTEMPTS = 3


@dataclass
class SubTask:
    k: int  # task row
    bs: int
    es: int
    images: int
    first: int  # index of its first image within the request
    steps: int
    work: float  # core-seconds (the model's Gcycles)
    attempt: int = 0
    keys: dict = field(default_factory=dict)
    futures: list = field(default_factory=list)
    end: float | None = None
    error: str | None = None


class LiveModel(DelayModel):
    """Executes decisions on the Dask cluster; see the module docstring."""

    def __init__(self, config: PrototypeConfig, scenario, scheduler, client, requests: Requests, tag: str):
        super().__init__(scenario, scheduler)
        self.on_slot_end = None  # the prototype evaluates schedulers; learners come trained
        self.config = config
        self.client = client
        self.requests = requests
        self.tag = tag
        self._caps = [float(f) for f in scenario.capacities]
        self._rates = [float(r) for r in scenario.rates]
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self.dead: set[int] = set()
        self.redispatched = 0

    # -- the episode -------------------------------------------------------------------------------
    def run(self, trace, log: TaskLog, drain_timeout_s: float = 120.0, kill=None) -> None:
        """The slot loop in real time, then wait for every task; ``kill``: (ES, seconds, pid) to SIGKILL."""
        env = simpy.rt.RealtimeEnvironment(factor=1.0, strict=False)
        self.clock0 = time.time()  # wall time of slot 0: the environment's real-time origin
        if kill is not None:
            env.process(self._kill(env, *kill))
        env.process(self.process(env, trace, log))
        env.run()
        self._finish(drain_timeout_s)

    @staticmethod
    def _kill(env, es: int, at: float, pid: int):
        yield env.timeout(at)
        os.kill(pid, signal.SIGKILL)  # ES ``es``'s worker, without warning

    def start(self, env, log: TaskLog) -> None:
        super().start(env, log)
        n, n_tasks = self.n, len(log)
        self.outstanding = [0.0] * n  # core-seconds sent to each ES and not yet back
        self.link_free = [0.0] * n  # model time each ES's link is expected to be free
        self.subtasks: list[SubTask] = []
        self.remaining = np.zeros(n_tasks, int)
        self.recorded = np.zeros(n_tasks, bool)
        self.decided_fractions = np.zeros((n_tasks, n))
        self.decision_wall = np.full(n_tasks, np.nan)
        self.estimate = np.full(n_tasks, np.nan)
        self.error = np.full(n_tasks, None, dtype=object)
        self.task_redispatches = np.zeros(n_tasks, int)
        self.last_end = np.full(n_tasks, -np.inf)  # wall clock at which each task's latest sub-batch ended
        self._served = [0.0] * n
        slot, bs, task = log.slot, log.bs, log.task
        self.images = self.requests.images[slot, bs, task]
        self.steps = self.requests.steps[slot, bs, task]

    # -- what schedulers see -----------------------------------------------------------------------
    def backlog_at(self, now: float) -> np.ndarray:
        self._drain()
        backlog = np.array(self.outstanding)
        freeze(backlog)
        return backlog

    def _terms(self, now, k):
        self._drain()
        link_wait = [max(free - now, 0.0) for free in self.link_free]
        log = self.log
        b = int(log.bs[k])
        wait, duration, tx = linear_terms(
            self._caps, self._rates, self.outstanding, link_wait, b,
            float(log.size[k] * log.density[k]), float(log.size[k]), float(log.result[k]), False,
        )  # fmt: skip
        return wait, duration, tx

    def terms(self, now: float, k: int) -> Terms:
        wait, duration, tx = self._terms(now, k)
        wait_a, duration_a = np.array(wait), np.array(duration)
        terms = Terms(wait_a, duration_a, duration_a, np.array(self.outstanding), np.array(tx))
        freeze(*terms[:5])
        return terms

    # -- decisions ---------------------------------------------------------------------------------
    def commit(self, now, t, k, subset, fractions, terms) -> None:
        self._send(now, k, np.asarray(fractions, float), terms.wait, terms.duration)

    def commit_slot(self, now: float, t: int, rows: slice, decision: Decision) -> None:
        for j, k in enumerate(range(rows.start, rows.stop)):
            terms = self.terms(now, k)
            fractions = (
                decision.fractions[j]
                if decision.fractions is not None
                else self.allocate(terms, decision.subset[j])
            )
            self._send(now, k, np.asarray(fractions, float), terms.wait, terms.duration)

    def _send(self, now: float, k: int, fractions: np.ndarray, wait, duration) -> None:
        log = self.log
        b, n_images = int(log.bs[k]), int(self.images[k])
        counts = largest_remainder(fractions, n_images)
        self.decided_fractions[k] = fractions
        log.fractions[k] = counts / n_images  # what really runs
        used = counts > 0
        self.estimate[k] = max(wait[i] + log.fractions[k][i] * duration[i] for i in np.flatnonzero(used))
        self.decision_wall[k] = time.time()
        per_image = float(self.steps[k]) * self.config.service.seconds_per_evaluation
        first = 0
        for i in np.flatnonzero(used):
            i = int(i)
            sub = SubTask(k, b, i, int(counts[i]), first, int(self.steps[k]), counts[i] * per_image)
            first += sub.images
            self.subtasks.append(sub)
            self.remaining[k] += 1
            if i != b:  # the upload is expected to queue on ES i's link
                self.link_free[i] = (
                    max(self.link_free[i], now) + sub.images * self.config.image_mbit / self._rates[i]
                )
            self._submit(sub)

    def _submit(self, sub: SubTask, part=None) -> None:
        seed = int(1_000_003 * (self.log.episode + 1) + sub.k)
        futures = service.submit_subbatch(
            self.client, sub.bs, sub.es, seed, sub.first, sub.images, sub.steps, self.config.service.mask,
            name=f"{self.tag}-{sub.k}-{sub.es}-{sub.attempt}", part=part,
        )  # fmt: skip
        sub.futures = list(futures)
        sub.keys = dict(zip(("part", "repair", "fetch"), (f.key for f in futures)))
        self.outstanding[sub.es] += sub.work
        futures[-1].add_done_callback(lambda _f, sub=sub: self._done.put(sub))

    # -- outcomes ----------------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                sub = self._done.get_nowait()
            except queue.Empty:
                return
            self._resolve(sub)

    def _resolve(self, sub: SubTask) -> None:
        part, repaired, fetched = sub.futures
        self.outstanding[sub.es] = max(self.outstanding[sub.es] - sub.work, 0.0)
        if fetched.status == "finished":
            sub.end = float(fetched.result())
            self.last_end[sub.k] = max(self.last_end[sub.k], sub.end)
            self._served[sub.es] += sub.work
            self._settle(sub.k)
            return
        culprit = part if part.status == "error" else repaired if repaired.status == "error" else fetched
        exc = culprit.exception() if culprit.status == "error" else None
        kind = type(exc).__name__ if exc is not None else "CancelledError"
        if kind not in INFRASTRUCTURE_ERRORS:
            raise PrototypeError(f"sub-task {culprit.key} failed on its worker: {kind}: {exc}")
        sub.error = f"{culprit.key}: {kind}"
        if culprit is repaired and part.status == "finished" and sub.attempt + 1 < MAX_ATTEMPTS:
            self.dead.add(sub.es)
            target = self._fallback(sub.bs)
            if target is not None:
                self.redispatched += 1
                self.task_redispatches[sub.k] += 1
                retry = SubTask(
                    sub.k, sub.bs, target, sub.images, sub.first, sub.steps, sub.work, sub.attempt + 1
                )
                self.subtasks.append(retry)
                self._submit(retry, part=part)
                return
        if culprit is part or culprit is fetched:
            self.dead.add(sub.bs)
        self.error[sub.k] = sub.error
        self._settle(sub.k)

    def _fallback(self, bs: int) -> int | None:
        alive = [i for i in range(self.n) if i not in self.dead]
        if not alive:
            return None
        if bs in alive:
            return bs
        return min(alive, key=lambda i: self.outstanding[i] / self._caps[i])

    def _settle(self, k: int) -> None:
        self.remaining[k] -= 1
        if self.remaining[k] > 0 or self.recorded[k]:
            return
        self.recorded[k] = True
        if self.error[k] is not None:
            self.record_outcome(k, np.nan, True, self.fail_reward)
        else:
            latency = self.last_end[k] - (self.clock0 + float(self.log.arrival[k]))
            failed = latency > self.scenario.deadline_s
            self.record_outcome(k, latency, failed, self.fail_reward if failed else -latency)

    def _finish(self, timeout_s: float) -> None:
        """Wait for every task; what is still open after ``timeout_s`` is failed and its futures cancelled."""
        limit = time.monotonic() + timeout_s
        while not self.recorded[self.log.decided].all():
            self._drain()
            if time.monotonic() > limit:
                for sub in self.subtasks:
                    if sub.end is None and not self.recorded[sub.k]:
                        self.client.cancel(sub.futures)
                        self.error[sub.k] = f"not finished {timeout_s:g} s after the last slot"
                        self.recorded[sub.k] = True
                        self.record_outcome(sub.k, np.nan, True, self.fail_reward)
                break
            time.sleep(0.01)

    def release(self) -> None:
        self.client.cancel([f for s in self.subtasks for f in s.futures])

    @property
    def served(self) -> np.ndarray:
        return np.array(self._served)
