"""One record per task, in decision order, kept as columns (cheap to fill, cheap to write)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .arrivals import Trace
from .config import Scenario
from .scheduling import SlotFeedback, SlotObservation, read_only


class TaskLog:
    """Columns of every task of one episode; arrival fields come from the trace, outcomes from the model.

    Decision order is the reference's: slot, then BS, then task slot index, which is the
    C order of the trace's non-zero entries, so record ``k`` is known before the run.
    """

    def __init__(self, scenario: Scenario, trace: Trace, episode: int):
        decided = trace.sizes[: scenario.decision_slots]
        slot, bs, task = np.nonzero(decided)
        n, n_servers = slot.shape[0], scenario.n_bs
        self.episode = episode
        self.slot = slot
        self.bs = bs
        self.task = task
        self.arrival = slot * scenario.slot_length
        self.size = decided[slot, bs, task]
        self.density = np.asarray(trace.densities[: scenario.decision_slots])[slot, bs, task]
        # result sizes (Mbit) downloaded from the servers; None for a scenario without downloads
        self.result = (
            None
            if trace.results is None
            else np.asarray(trace.results[: scenario.decision_slots])[slot, bs, task]
        )
        self.subset = np.zeros((n, n_servers), dtype=bool)
        self.fractions = np.zeros((n, n_servers))
        self.latency = np.full(n, np.nan)  # raw make-span; NaN until the task ends (or if dropped)
        self.failed = np.zeros(n, dtype=bool)
        self.reward = np.zeros(n)
        self.decided = np.zeros(n, dtype=bool)
        # slot t's records are rows slot_start[t]:slot_start[t+1]
        self.slot_start = np.searchsorted(slot, np.arange(scenario.decision_slots + 1))
        self.deadline = scenario.deadline_s

    def __len__(self) -> int:
        return self.slot.shape[0]

    @property
    def makespan(self) -> np.ndarray:
        """The paper's make-span: the raw value, or the deadline for a failed task."""
        return np.where(self.failed, self.deadline, self.latency)

    def slot_rows(self, t: int) -> slice:
        """Rows of slot ``t``'s tasks."""
        return slice(int(self.slot_start[t]), int(self.slot_start[t + 1]))

    def _arrivals(self, t: int) -> dict[str, np.ndarray]:
        """Slot ``t``'s arrival columns: BS, task slot index, size, density."""
        rows = self.slot_rows(t)
        return {
            "bs": self.bs[rows],
            "task": self.task[rows],
            "size": self.size[rows],
            "density": self.density[rows],
            **({} if self.result is None else {"result": self.result[rows]}),
        }

    def slot_observation(
        self, t: int, now: float, backlog: np.ndarray, scenario: Scenario
    ) -> SlotObservation:
        """Every task of slot ``t`` with the start-of-slot ``backlog``, for ``decide_slot``."""
        return SlotObservation(
            time=now, slot=t, backlog=backlog, scenario=scenario, episode=self.episode, **self._arrivals(t)
        )

    def result_of(self, k: int) -> float | None:
        """Task ``k``'s result size (Mbit), or None without downloads."""
        return None if self.result is None else float(self.result[k])

    def slot_feedback(
        self, t: int, backlog, next_backlog, trace: Trace, latency=None, failed=None, reward=None
    ):
        """Slot ``t``'s decisions and outcomes for learners; outcomes default to the recorded ones."""
        rows = self.slot_rows(t)
        return SlotFeedback(
            slot=t,
            **self._arrivals(t),
            backlog=backlog,
            subsets=read_only(self.subset[rows].astype(float)),
            fractions=read_only(self.fractions[rows]),
            makespan=read_only(self.latency[rows] if latency is None else latency),
            failed=read_only(self.failed[rows] if failed is None else failed),
            reward=read_only(self.reward[rows] if reward is None else reward),
            next_backlog=next_backlog,
            next_sizes=read_only(np.asarray(trace.sizes[t + 1])),
            next_densities=read_only(np.asarray(np.broadcast_to(trace.densities, trace.sizes.shape)[t + 1])),
        )

    def frame(self, **constants) -> pd.DataFrame:
        """The per-task table (subsets and fractions as list columns)."""
        df = pd.DataFrame(
            {
                "episode": np.full(len(self), self.episode),
                "slot": self.slot,
                "arrival_time": self.arrival,
                "bs": self.bs,
                "task": self.task,
                "size": self.size,
                "density": self.density,
                **({} if self.result is None else {"result": self.result}),
                "subset": list(self.subset),
                "fractions": list(self.fractions),
                "latency": self.latency,
                "makespan": self.makespan,
                "failed": self.failed,
                "reward": self.reward,
            }
        )
        for key, value in constants.items():
            df.insert(0, key, value)
        return df


def episode_metrics(log: TaskLog, served: np.ndarray, capacity: np.ndarray, horizon: float) -> dict:
    """Per-episode metrics: the paper's mean make-span, latency percentiles, failures, utilisation.

    Latency percentiles count tasks that never finished (dropped) as +inf.
    """
    undecided = int((~log.decided).sum())
    if undecided:
        raise RuntimeError(f"{undecided} task(s) of episode {log.episode} were never decided")
    latency = log.latency
    finished = np.isfinite(latency)
    censored = np.where(finished, latency, np.inf)
    n = len(log)
    pct = [np.nan] * 3
    if n:
        with np.errstate(invalid="ignore"):  # interpolating between two +inf order statistics
            pct = np.percentile(censored, [50, 95, 99])
        pct = np.where(np.isnan(pct), np.inf, pct)
    utilisation = served / (capacity * horizon)
    return {
        "mean_makespan": float(log.makespan.mean()) if n else np.nan,
        "mean_latency": float(latency[finished].mean()) if finished.any() else np.nan,
        "p50_latency": float(pct[0]),
        "p95_latency": float(pct[1]),
        "p99_latency": float(pct[2]),
        "failure_rate": float(log.failed.mean()) if n else np.nan,
        "n_tasks": n,
        "n_failed": int(log.failed.sum()),
        "mean_reward": float(log.reward.mean()) if n else np.nan,
        "utilisation": utilisation.tolist(),
        "mean_utilisation": float(utilisation.mean()),
    }
