"""Simulated tasks per second for the built-in schedulers in both delay models, beside SimPy's raw event rate.

Prints one ``name: value`` line per figure. Usage: ``python benchmarks/throughput.py [--episodes N]``.
Figures from one run on one machine are comparable with each other (ratios), not across machines.
"""

from __future__ import annotations

import argparse
import time

import simpy
from machine_speed import print_figures

from mecsim.config import Scenario
from mecsim.engine import Simulation
from mecsim.plugins import make_scheduler

REFERENCE_OPTIMAL_TASKS_PER_S = 323  # the reference code's greedy-optimal, per its own timing


def simpy_events_per_s(n_events: int = 400_000) -> float:
    """Raw SimPy rate: one process yielding ``n_events`` zero-work timeouts."""
    env = simpy.Environment()

    def ticker():
        for _ in range(n_events):
            yield env.timeout(1.0)

    env.process(ticker())
    started = time.perf_counter()
    env.run()
    return n_events / (time.perf_counter() - started)


def tasks_per_s(scheduler: str, model: str, episodes: int) -> float:
    scenario = Scenario(model=model, preset="optimal" if scheduler == "optimal" else "amcoedge")
    simulation = Simulation(scenario, make_scheduler(scheduler, scenario))
    simulation.run_episode(0)  # warm-up: imports, caches
    tasks, started = 0, time.perf_counter()
    for episode in range(1, episodes + 1):
        tasks += simulation.run_episode(episode).metrics["n_tasks"]
    return tasks / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--episodes", type=int, default=3, help="timed episodes per figure (about 4 500 tasks each)"
    )
    args = parser.parse_args()

    figures: dict[str, float] = {"simpy_events_per_s": simpy_events_per_s()}
    for model in ("slotted", "event"):
        for scheduler in ("local", "random", "optimal"):
            figures[f"{scheduler}_{model}_tasks_per_s"] = tasks_per_s(scheduler, model, args.episodes)
    figures["simpy_events_per_s_after"] = simpy_events_per_s()  # the machine's load can drift during the run

    raw = min(figures["simpy_events_per_s"], figures["simpy_events_per_s_after"])
    figures["local_slotted_over_simpy_events"] = figures["local_slotted_tasks_per_s"] / raw
    figures["local_event_over_simpy_events"] = figures["local_event_tasks_per_s"] / raw
    figures["optimal_slotted_over_reference"] = (
        figures["optimal_slotted_tasks_per_s"] / REFERENCE_OPTIMAL_TASKS_PER_S
    )
    print_figures(figures)


if __name__ == "__main__":
    main()
