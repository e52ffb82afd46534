"""What every delay model shares: the slot loop, observations, decision validation, the task log.

A delay model runs one episode as a SimPy process. The base class owns everything that
is the same in every model:

* the slot loop — all tasks of slot t arrive at t·Δ and are decided in the reference
  order (BS 0..B-1, then task index 0..N-1, i.e. TaskLog row order);
* decisions — per task through ``scheduler.decide(Observation)``, or per slot through
  ``decide_slot(SlotObservation)``; every return value is validated, and a subset
  without fractions is allocated by the scenario's rule;
* the task log — decisions are written here (`run_task`, `run_slot`), outcomes only through
  `record_outcome`;
* learner feedback — ``on_slot_end`` receives slot t's `SlotFeedback` at the start of
  slot t+1 (or at the horizon), with the backlog the next decisions see.

A model supplies its physics through these extension points:

* ``start(env, log)`` — build the episode's state (and any SimPy processes of its own);
  ``self.profile`` holds the episode's fault realisation (None without faults);
* ``open_slot(t)`` — anything due at the start of slot t (default: nothing);
* ``backlog_at(now)`` — the per-ES backlog the slot's decisions observe;
* ``terms(now, k)`` — task ``k``'s delay terms on every server (`Terms`);
* ``commit(now, t, k, subset, fractions, terms)`` — execute one decision;
* ``commit_slot(now, t, rows, decision)`` — execute a validated slot of decisions;
* ``close_slot(t)`` — anything due at the end of slot t's decisions (default: nothing);
* ``feedback(t, backlog, next_backlog, trace)`` — slot t's feedback (default: the log's outcomes);
* ``served`` — Gcycles processed by each ES within the horizon.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import simpy
from simpy.events import URGENT, Timeout

from ..allocation import allocate_subset
from ..arrivals import Trace
from ..config import Scenario
from ..faults import Profile
from ..plugins import plugin_error, where
from ..scheduling import (
    Decision,
    Observation,
    SchedulerError,
    SlotFeedback,
    check_slot_decision,
    hook,
    normalise_decision,
    vars_of,
)
from ..tasklog import TaskLog
from . import slotted


class UrgentTimeout(Timeout):
    """A timeout processed before ordinary events of the same instant (arrivals before service)."""

    def __init__(self, env: simpy.Environment, delay: float, value=None):
        # NOTE: inlined from Timeout.__init__() to schedule with URGENT priority
        self.env = env
        self.callbacks = []
        self._value = value
        self._delay = delay
        self._ok = True
        env.schedule(self, URGENT, delay)


def freeze(*arrays: np.ndarray) -> None:
    """Make arrays that a scheduler will see read-only (they are the model's own, or fresh)."""
    for array in arrays:
        array.setflags(write=False)  # cheaper than .flags.writeable (no flags object)


class Terms(NamedTuple):
    """A task's delay terms on every server, and the state behind them (what `Observation` shows).

    Every array is read-only: a scheduler sees them and must not change the simulation through them.

    A fraction x_i on server i is expected to finish ``wait[i] + x_i·duration[i]`` after the
    decision (``split_duration`` when the task is split over several servers).
    """

    wait: np.ndarray
    duration: np.ndarray
    split_duration: np.ndarray
    current_backlog: np.ndarray  # Gcycles per ES now
    tx_backlog: np.ndarray  # seconds of upload already committed by this BS towards each ES
    extra: Any = None  # model-specific (e.g. the same terms as Python lists)


class DelayModel:
    """Base of the delay models; see the module docstring for the extension points."""

    def __init__(self, scenario: Scenario, scheduler):
        self.scenario = scenario
        self.scheduler = scheduler
        self.n = scenario.n_bs
        self.params = slotted.SlottedParams.from_scenario(scenario)
        self.estimate_params = self.params  # the make-span rule of `Observation.evaluate`
        self.name = getattr(scheduler, "name", type(scheduler).__name__)
        self.decide_slot = hook(scheduler, "decide_slot")
        self.on_slot_end = hook(scheduler, "on_slot_end")
        self.horizon = scenario.decision_slots * scenario.slot_length
        # a failed task's reward: -fail_penalty·deadline (0 without a deadline: no task can fail)
        self.fail_reward = (
            -float(self.params.fail_penalty) * scenario.deadline_s if scenario.deadline else 0.0
        )
        self.log: TaskLog | None = None

    # -- extension points ----------------------------------------------------------------------------
    def start(self, env: simpy.Environment, log: TaskLog) -> None:
        self.log = log

    def open_slot(self, t: int) -> None:
        """Called at the start of slot ``t``, before its backlog is observed."""

    def backlog_at(self, now: float) -> np.ndarray:
        raise NotImplementedError

    def terms(self, now: float, k: int) -> Terms:
        raise NotImplementedError

    def commit(
        self, now: float, t: int, k: int, subset: np.ndarray, fractions: np.ndarray, terms: Terms
    ) -> None:
        raise NotImplementedError

    def commit_slot(self, now: float, t: int, rows: slice, decision: Decision) -> None:
        raise NotImplementedError

    def close_slot(self, t: int) -> None:
        """Called after slot ``t``'s decisions."""

    def feedback(self, t: int, backlog: np.ndarray, next_backlog: np.ndarray, trace: Trace) -> SlotFeedback:
        """Slot ``t``'s decisions and recorded outcomes."""
        return self.log.slot_feedback(t, backlog, next_backlog, trace)

    @property
    def served(self) -> np.ndarray:
        raise NotImplementedError

    # -- the episode ---------------------------------------------------------------------------------
    def process(self, env: simpy.Environment, trace: Trace, log: TaskLog, profile: Profile | None = None):
        """The SimPy process of one episode: slot by slot, decisions in the reference order.

        ``profile``: the episode's fault realisation (`mecsim.faults`), None without faults.
        """
        self.profile = profile
        self.start(env, log)
        dt = self.scenario.slot_length
        pending = None  # (slot, its start backlog) awaiting feedback
        for t in range(self.scenario.decision_slots):
            now = t * dt
            if t:
                yield UrgentTimeout(env, max(now - env.now, 0.0))
            self.open_slot(t)
            backlog = self.backlog_at(now)
            if pending is not None:
                self.deliver_feedback(self.feedback(*pending, backlog, trace))
            self.run_slot(now, t, backlog)
            self.close_slot(t)
            if self.on_slot_end is not None:
                pending = (t, backlog)
        if pending is not None:
            yield UrgentTimeout(env, max(self.horizon - env.now, 0.0))
            self.deliver_feedback(self.feedback(*pending, self.backlog_at(self.horizon), trace))

    def deliver_feedback(self, feedback: SlotFeedback) -> None:
        try:
            self.on_slot_end(feedback)
        except Exception as err:
            raise plugin_error(
                self.name, "on_slot_end", err, vars_of(feedback), episode=self.log.episode, slot=feedback.slot
            ) from err

    def run_slot(self, now: float, t: int, backlog: np.ndarray) -> None:
        log = self.log
        rows = log.slot_rows(t)
        if self.decide_slot is not None:
            if rows.stop > rows.start:
                obs = log.slot_observation(t, now, backlog, self.scenario)
                place = dict(episode=log.episode, slot=t)
                try:
                    raw = self.decide_slot(obs)
                except Exception as err:
                    raise plugin_error(self.name, "decide_slot", err, vars_of(obs), **place) from err
                try:
                    decision = check_slot_decision(raw, rows.stop - rows.start, self.n, self.name)
                except SchedulerError as err:
                    raise SchedulerError(f"{err} ({where(**place)})") from None
                log.subset[rows] = decision.subset > 0
                log.decided[rows] = True
                if decision.fractions is not None:
                    log.fractions[rows] = decision.fractions
                self.commit_slot(now, t, rows, decision)
            return
        for k in range(rows.start, rows.stop):
            self.run_task(now, t, k, backlog)

    def run_task(self, now: float, t: int, k: int, backlog: np.ndarray) -> None:
        """One task: observation, the scheduler's decision, validation, allocation, commit."""
        log = self.log
        terms = self.terms(now, k)
        obs = Observation(
            time=now,
            slot=t,
            bs=int(log.bs[k]),
            task=int(log.task[k]),
            size=float(log.size[k]),
            density=float(log.density[k]),
            backlog=backlog,
            current_backlog=terms.current_backlog,
            tx_backlog=terms.tx_backlog,
            wait=terms.wait,
            duration=terms.duration,
            split_duration=terms.split_duration,
            scenario=self.scenario,
            _evaluator=self.evaluate,
            episode=log.episode,
            result=0.0 if log.result is None else float(log.result[k]),
        )
        try:
            raw = self.scheduler.decide(obs)
        except Exception as err:
            raise plugin_error(self.name, "decide", err, vars_of(obs), **self.place(t, k)) from err
        try:
            decision = normalise_decision(raw, self.n, self.name)
        except SchedulerError as err:
            raise SchedulerError(f"{err} ({where(**self.place(t, k))})") from None
        fractions = decision.fractions
        if fractions is None:
            fractions = self.allocate(terms, decision.subset)
        log.subset[k] = decision.subset > 0
        log.fractions[k] = fractions
        log.decided[k] = True
        self.commit(now, t, k, decision.subset, fractions, terms)

    def place(self, t: int, k: int) -> dict[str, int]:
        """Where task ``k`` is, for error messages: episode, slot, BS, task slot index."""
        log = self.log
        return dict(episode=log.episode, slot=t, bs=int(log.bs[k]), task=int(log.task[k]))

    # -- helpers for the models ----------------------------------------------------------------------
    def allocate(self, terms: Terms, subset: np.ndarray) -> np.ndarray:
        """Fractions over ``subset`` by the scenario's rule on these terms (a single server takes all)."""
        return allocate_subset(
            self.scenario.allocation, terms.wait, terms.split_duration, subset, self.params.outages
        )

    def evaluate(self, obs: Observation, masks: np.ndarray, rule: str):
        """`Observation.evaluate`: fractions and make-spans of candidate subsets under ``estimate_params``."""
        return slotted.evaluate_subsets(
            obs.wait, obs.duration, obs.split_duration, masks, rule, self.estimate_params
        )

    def record_outcome(self, k, latency, failed, reward) -> None:
        """Task ``k``'s (or a slice of tasks') raw latency, failure and reward."""
        log = self.log
        log.latency[k] = latency
        log.failed[k] = failed
        log.reward[k] = reward
