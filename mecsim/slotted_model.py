"""The slotted delay model as a SimPy process: one clock tick per slot, decisions in reference order.

All tasks of slot t arrive at t·Δ and are decided in order BS 0..B-1, task index
0..N-1 (spec §1.3); the accounting is the pure functions of `mecsim.slotted`.
"""
from __future__ import annotations

import numpy as np
import simpy

from . import slotted
from .allocation import allocate_subset
from .arrivals import Trace
from .config import Scenario
from .scheduling import Observation, check_slot_decision, normalise_decision
from .tasklog import TaskLog


class SlottedModel:
    def __init__(self, scenario: Scenario, scheduler):
        self.scenario = scenario
        self.scheduler = scheduler
        self.params = slotted.SlottedParams.from_scenario(scenario)
        self.n = scenario.n_bs
        self.state = slotted.initial_state(self.n)
        self.served = np.zeros(self.n)
        self.wants_feedback = _overrides(scheduler, "on_slot_end")
        self._remote = 1.0 - np.eye(self.n)  # row b: 1 for the servers remote from BS b

    # -- SimPy process -----------------------------------------------------------------------------
    def process(self, env: simpy.Environment, trace: Trace, log: TaskLog):
        for t in range(self.scenario.decision_slots):
            self.run_slot(env.now, t, trace, log)
            yield env.timeout(self.scenario.slot_length)

    def run_slot(self, now: float, t: int, trace: Trace, log: TaskLog) -> None:
        rows = log.slot_rows(t)
        start_backlog = self.state.backlog
        decide_slot = getattr(self.scheduler, "decide_slot", None)
        if decide_slot is not None:
            self._run_batched(now, t, rows, log, decide_slot)
        else:
            for k in range(rows.start, rows.stop):
                self._run_task(now, t, k, log)
        self.state, served = slotted.end_slot(self.state, self.params)
        self.served += served
        if self.wants_feedback:
            self.scheduler.on_slot_end(log.slot_feedback(t, start_backlog, self.state.backlog, trace.sizes[t + 1]))

    # -- one task at a time ------------------------------------------------------------------------
    def _run_task(self, now: float, t: int, k: int, log: TaskLog) -> None:
        b, size, density = int(log.bs[k]), float(log.size[k]), float(log.density[k])
        p, state = self.params, self.state
        wait, duration, split_duration = slotted.delay_terms(state, b, size, density, p)
        obs = Observation(
            time=now,
            slot=t,
            bs=b,
            task=int(log.task[k]),
            size=size,
            density=density,
            backlog=state.backlog,
            current_backlog=state.backlog + state.assigned,
            tx_backlog=self._remote[b] * state.tau[b],
            wait=wait,
            duration=duration,
            split_duration=split_duration,
            scenario=self.scenario,
            _evaluator=self._evaluate,
        )
        decision = normalise_decision(self.scheduler.decide(obs), self.n, self.scheduler.name)
        self._execute(log, k, decision.subset, decision.fractions, (wait, duration, split_duration))

    def _execute(self, log: TaskLog, k: int, subset, fractions, terms=None) -> None:
        """Allocate if needed, then apply task ``k``'s decision to the state and record it."""
        b, size, density = int(log.bs[k]), float(log.size[k]), float(log.density[k])
        p = self.params
        wait, duration, split_duration = terms or slotted.delay_terms(self.state, b, size, density, p)
        if fractions is None:
            fractions = allocate_subset(self.scenario.allocation, wait, split_duration, subset)
        span = slotted.makespan(wait, duration, split_duration, subset, fractions, p)
        self.state, span, failed, reward = slotted.commit_task(self.state, b, size, density, subset, fractions, span, p)
        log.subset[k] = subset > 0
        log.fractions[k] = fractions
        log.latency[k] = span
        log.failed[k] = failed
        log.reward[k] = reward
        log.decided[k] = True

    def _evaluate(self, obs: Observation, masks: np.ndarray, rule: str):
        return slotted.evaluate_subsets(obs.wait, obs.duration, obs.split_duration, masks, rule, self.params)

    # -- a whole slot at once ----------------------------------------------------------------------
    def _run_batched(self, now: float, t: int, rows: slice, log: TaskLog, decide_slot) -> None:
        slot_obs = log.slot_observation(t, now, self.state.backlog, self.scenario)
        n_tasks = rows.stop - rows.start
        if n_tasks == 0:
            return
        decision = check_slot_decision(decide_slot(slot_obs), n_tasks, self.n, self.scheduler.name)
        if decision.fractions is not None:
            result = slotted.apply_slot(
                self.state, slot_obs.bs, slot_obs.size, slot_obs.density, decision.subset, decision.fractions, self.params
            )
            if result is not None:
                self.state, span, failed, reward = result
                log.subset[rows] = decision.subset > 0
                log.fractions[rows] = decision.fractions
                log.latency[rows] = span
                log.failed[rows] = failed
                log.reward[rows] = reward
                log.decided[rows] = True
                return
        # allocation on the true state, or a binding τ clamp: execute task by task
        for j, k in enumerate(range(rows.start, rows.stop)):
            fractions = None if decision.fractions is None else decision.fractions[j]
            self._execute(log, k, decision.subset[j], fractions)


def _overrides(obj, method: str) -> bool:
    """True when ``obj`` defines ``method`` itself rather than inheriting the base class no-op."""
    from .scheduling import Scheduler

    impl = getattr(type(obj), method, None)
    return impl is not None and impl is not getattr(Scheduler, method, None)
