"""The slotted delay model as a SimPy process: the reference's accounting, slot by slot.

All tasks of slot t arrive at t·Δ and are decided in order BS 0..B-1, task index 0..N-1
(spec §1.3); the accounting is the pure functions of `mecsim.models.slotted`, and the
queues drain as a fluid at the end of every slot (spec §1.5).

Faults (`mecsim.faults`) scale slot t's capacities and rates by each target's mean factor
over the slot: the true parameters drive the accounting; schedulers see them too when the
faults are observable, the nominal ones otherwise.
"""

from __future__ import annotations

import numpy as np
import simpy

from ..allocation import allocate_subset
from ..scheduling import Decision
from ..tasklog import TaskLog
from . import slotted
from .base import DelayModel, Terms, freeze


class SlottedModel(DelayModel):
    def start(self, env: simpy.Environment, log: TaskLog) -> None:
        super().start(env, log)
        self.state = slotted.initial_state(self.n)
        self._served = np.zeros(self.n)
        self._remote = 1.0 - np.eye(self.n)  # row b: 1 for the servers remote from BS b
        self.true_params = self.seen_params = self.params
        self._factors = None
        if self.profile is not None:
            shape = (self.n, self.scenario.decision_slots, self.scenario.slot_length)
            self._factors = (
                self.profile.slot_means("server", *shape),
                self.profile.slot_means("link", *shape),
            )

    def open_slot(self, t: int) -> None:
        if self._factors is None:
            return
        caps, rates, p = *self._factors, self.params
        self.true_params = p._replace(capacities=p.capacities * caps[t], rates=p.rates * rates[t])
        self.seen_params = self.true_params if self.scenario.faults.observable else p
        self.estimate_params = self.seen_params

    @property
    def served(self) -> np.ndarray:
        return self._served

    def backlog_at(self, now: float) -> np.ndarray:
        backlog = self.state.backlog  # Q(t): unchanged during the slot (the model never writes in place)
        freeze(backlog)
        return backlog

    def close_slot(self, t: int) -> None:
        self.state, served = slotted.end_slot(self.state, self.true_params)
        self._served += served

    def terms(self, now: float, k: int) -> Terms:
        log, state = self.log, self.state
        b = int(log.bs[k])
        wait, duration, split_duration = slotted.delay_terms(
            state, b, float(log.size[k]), float(log.density[k]), self.seen_params, result=log.result_of(k)
        )
        terms = Terms(
            wait, duration, split_duration, state.backlog + state.assigned, self._remote[b] * state.tau[b]
        )
        freeze(*terms[:5])
        return terms

    def commit(
        self, now: float, t: int, k: int, subset: np.ndarray, fractions: np.ndarray, terms: Terms | tuple
    ) -> None:
        """Run task ``k`` on the true parameters; ``terms`` starts with the (wait, duration, split) decided on."""
        log, p = self.log, self.true_params
        b, size, density = int(log.bs[k]), float(log.size[k]), float(log.density[k])
        true = (
            terms[:3]
            if p is self.seen_params
            else slotted.delay_terms(self.state, b, size, density, p, result=log.result_of(k))
        )
        span = slotted.makespan(*true, subset, fractions, p)
        self.state, span, failed, reward = slotted.commit_task(
            self.state, b, size, density, subset, fractions, span, p
        )
        self.record_outcome(k, span, failed, reward)

    def commit_slot(self, now: float, t: int, rows: slice, decision: Decision) -> None:
        log = self.log
        if decision.fractions is not None:
            result = slotted.apply_slot(
                self.state,
                log.bs[rows],
                log.size[rows],
                log.density[rows],
                decision.subset,
                decision.fractions,
                self.true_params,
                None if log.result is None else log.result[rows],
            )
            if result is not None:
                self.state, span, failed, reward = result
                self.record_outcome(rows, span, failed, reward)
                return
        # allocation on the true state, or a binding τ clamp: execute task by task (the slot's
        # subsets are already in the log; only the delay terms are needed, not a full `Terms`)
        rule, outages = self.scenario.allocation, self.params.outages
        for j, k in enumerate(range(rows.start, rows.stop)):
            b, size, density = int(log.bs[k]), float(log.size[k]), float(log.density[k])
            seen = slotted.delay_terms(
                self.state, b, size, density, self.seen_params, result=log.result_of(k)
            )
            subset = decision.subset[j]
            if decision.fractions is None:
                fractions = allocate_subset(rule, seen[0], seen[2], subset, outages)
                log.fractions[k] = fractions
            else:
                fractions = decision.fractions[j]
            self.commit(now, t, k, subset, fractions, seen)
