"""The simulation engine: a SimPy environment per episode, a delay model, a scheduler, a task log.

>>> from mecsim.config import Scenario
>>> from mecsim.plugins import make_scheduler
>>> scenario = Scenario(slots=3, tasks_per_slot=4, arrival_prob=1.0)
>>> sim = Simulation(scenario, make_scheduler("local", scenario))
>>> result = sim.run_episode(0)
>>> result.metrics["n_tasks"]   # 2 decision slots x 5 BSs x 4 task slots
40
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import simpy

from .arrivals import Trace, episode_trace
from .config import Scenario
from .models import make_model
from .plugins import call_hook
from .tasklog import TaskLog, episode_metrics


@dataclass
class EpisodeResult:
    episode: int
    log: TaskLog
    metrics: dict
    wall_time: float


class Simulation:
    """Runs episodes of one scenario with one scheduler (whose learned state persists across episodes)."""

    engine = "python"  # the backend's name, recorded in result rows

    def __init__(self, scenario: Scenario, scheduler):
        self.scenario = scenario
        self.scheduler = scheduler

    def run_episode(
        self, episode: int, trace: Trace | None = None, stream: str = "arrivals"
    ) -> EpisodeResult:
        scenario = self.scenario
        started = time.perf_counter()
        if trace is None:
            trace = episode_trace(scenario, scenario.seed, episode, stream)
        log = TaskLog(scenario, trace, episode)
        model = make_model(scenario, self.scheduler)
        env = simpy.Environment()
        env.process(model.process(env, trace, log, scenario.fault_profile(episode, stream)))
        env.run()
        horizon = scenario.decision_slots * scenario.slot_length
        metrics = episode_metrics(log, model.served, model.params.capacities * 1.0, horizon)
        call_hook(self.scheduler, "on_episode_end", episode, metrics, episode=episode)
        return EpisodeResult(episode, log, metrics, time.perf_counter() - started)
