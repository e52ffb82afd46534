"""Tasks per second of the compiled slot kernel (`mecsim.backends.kernel`) against the Python slotted path.

Prints one ``name: value`` line per figure. Usage: ``python benchmarks/kernel.py [--quick] [--no-train]``.

Every compiled figure is end to end, as `mecsim run` sees it: arrival traces, compaction,
the vmapped kernel, the per-task log and the per-episode metrics (compilation excluded,
reported separately). ``xR``: R episodes per vmapped call; ``slot_steps``: one compiled
call per slot under SimPy instead of one per episode. Throughputs are the best of several
timed calls (episodes on the Python path), which damps the load of other processes; the
training figures are single wall times. Figures from one run on one machine are comparable
with each other (ratios), not across machines; the 1-minute load average before and after
is printed because other processes may share the cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

from machine_speed import print_figures

from mecsim.backends.kernel import CompiledSimulation
from mecsim.config import Scenario
from mecsim.engine import Simulation
from mecsim.plugins import make_scheduler

REFERENCE_OPTIMAL_TASKS_PER_S = 323  # the reference code's greedy-optimal, per its own timing


def python_tasks_per_s(scenario: Scenario, scheduler, episodes: int) -> float:
    """Tasks/s of the best of ``episodes`` timed episodes (best-of damps other processes' load)."""
    simulation = Simulation(scenario, scheduler)
    simulation.run_episode(0)  # warm-up
    best = 0.0
    for episode in range(1, episodes + 1):
        started = time.perf_counter()
        tasks = simulation.run_episode(episode).metrics["n_tasks"]
        best = max(best, tasks / (time.perf_counter() - started))
    return best


def compiled_tasks_per_s(
    scenario: Scenario, scheduler, replicas: int, groups: int, granularity: str = "episode"
):
    """(tasks/s of the best of ``groups`` calls of ``replicas`` episodes, seconds of the first, compiling call)."""
    simulation = CompiledSimulation(scenario, scheduler, granularity=granularity)
    started = time.perf_counter()
    simulation.run_episodes(list(range(1000, 1000 + replicas)))  # compiles
    compile_s = time.perf_counter() - started
    best = 0.0
    for g in range(groups):
        started = time.perf_counter()
        results = simulation.run_episodes(list(range(g * replicas, (g + 1) * replicas)))
        tasks = sum(r.metrics["n_tasks"] for r in results)
        best = max(best, tasks / (time.perf_counter() - started))
    return best, compile_s


def paired_over_python(
    scenario: Scenario, scheduler, replicas: int, rounds: int, python_episodes: int = 2
) -> dict[str, float]:
    """The compiled ×``replicas`` rate over the SimPy path's, both timed back to back in each of ``rounds``
    rounds (in turn first), so that a slow spell of the machine slows both sides of a ratio rather than
    one figure of it: the median, least and greatest per-round ratio, and the ratio of the two sides'
    rates over all rounds (``total``: tasks over seconds, as a long run sees them)."""
    python = Simulation(scenario, scheduler)
    python.run_episode(0)  # warm-up
    compiled = CompiledSimulation(scenario, scheduler)
    compiled.run_episodes(list(range(1000, 1000 + replicas)))  # compiles
    sums = {"python": [0, 0.0], "compiled": [0, 0.0]}  # tasks, seconds

    def timed(side, r):
        started = time.perf_counter()
        if side == "python":
            episodes = range(1 + r * python_episodes, 1 + (r + 1) * python_episodes)
            tasks = sum(python.run_episode(e).metrics["n_tasks"] for e in episodes)
        else:
            results = compiled.run_episodes(list(range(r * replicas, (r + 1) * replicas)))
            tasks = sum(x.metrics["n_tasks"] for x in results)
        seconds = time.perf_counter() - started
        sums[side][0] += tasks
        sums[side][1] += seconds
        return tasks / seconds

    ratios = []
    for r in range(rounds):
        order = ("python", "compiled") if r % 2 == 0 else ("compiled", "python")
        rates = {side: timed(side, r) for side in order}
        ratios.append(rates["compiled"] / rates["python"])
    total = (sums["compiled"][0] / sums["compiled"][1]) / (sums["python"][0] / sums["python"][1])
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "total": total}


def train_seconds(scenario: Scenario, seeds: list[int], episodes: int) -> tuple[float, float, float]:
    """(seconds for ``episodes`` training episodes of every seed, compile seconds, last-50 mean make-span)."""
    from mecsim.backends.kernel.training import KernelTrainer

    started = time.perf_counter()
    KernelTrainer(scenario, "amcoedge", seeds).run(1, first_episode=10**6, timing=False)  # compiles
    compile_s = time.perf_counter() - started
    trainer = KernelTrainer(scenario, "amcoedge", seeds)
    started = time.perf_counter()
    tables = trainer.run(episodes, timing=False)
    wall = time.perf_counter() - started
    last = sum(t["mean_makespan"].tail(50).mean() for t in tables) / len(tables)
    return wall, compile_s, last


def python_train_seconds(scenario: Scenario, episodes: int) -> tuple[float, float]:
    """(seconds for a whole ``episodes``-episode AMCoEdge training run on the SimPy path, after a one-episode
    warm-up run that compiles the learner's jitted steps; last-50 mean make-span)."""
    from mecsim.training import train

    # engine "python": the default ("auto") trains on the kernel wherever the learner has a JAX form
    run = partial(train, scenario, "amcoedge", eval_episodes=0, progress=False, engine="python")
    run(1)
    started = time.perf_counter()
    result = run(episodes)
    return time.perf_counter() - started, result.online_mean(50)


def python_train_seconds_per_episode(scenario: Scenario, episodes: int) -> float:
    """Seconds per online training episode on the SimPy path (`python_train_seconds` over ``episodes``)."""
    return python_train_seconds(scenario, episodes)[0] / episodes


def arguments(description: str) -> argparse.Namespace:
    """The kernel benchmarks' options: --quick, --no-train, --train-episodes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer timed episodes (noisier figures)")
    parser.add_argument("--no-train", action="store_true", help="skip the AMCoEdge training figures")
    parser.add_argument("--train-episodes", type=int, default=500)
    return parser.parse_args()


def start_figures() -> dict[str, float]:
    return {"load_average_1min_start": os.getloadavg()[0]}


def report(figures: dict[str, float]) -> None:
    """Print the figures as ``name: value`` lines, after the load average at the end."""
    figures["load_average_1min_end"] = os.getloadavg()[0]
    print_figures(figures)


def main() -> None:
    args = arguments(__doc__)
    q = args.quick
    figures = start_figures()

    scenario = Scenario(preset="optimal")
    optimal = make_scheduler("optimal", scenario)
    figures["optimal_python_tasks_per_s"] = python_tasks_per_s(scenario, optimal, 2 if q else 5)
    for replicas, groups in (
        (1, 8 if q else 24),
        (8, 2 if q else 6),
        (16, 1 if q else 4),
        (64, 1 if q else 3),
    ):
        rate, compile_s = compiled_tasks_per_s(scenario, optimal, replicas, groups)
        figures[f"optimal_compiled_x{replicas}_tasks_per_s"] = rate
        figures[f"optimal_compiled_x{replicas}_compile_s"] = compile_s
    for replicas, groups in ((1, 8 if q else 24), (64, 1 if q else 3)):
        rate, _ = compiled_tasks_per_s(scenario, optimal, replicas, groups, granularity="slot")
        figures[f"optimal_compiled_x{replicas}_slot_steps_tasks_per_s"] = rate
    figures["optimal_compiled_x64_over_python"] = (
        figures["optimal_compiled_x64_tasks_per_s"] / figures["optimal_python_tasks_per_s"]
    )
    figures["optimal_compiled_x64_over_reference"] = (
        figures["optimal_compiled_x64_tasks_per_s"] / REFERENCE_OPTIMAL_TASKS_PER_S
    )

    # AMCoEdge inference: greedy decisions of an (untrained) network, reference preset
    scenario = Scenario()
    learner = make_scheduler("amcoedge", scenario)
    learner.train(False)
    figures["amcoedge_python_tasks_per_s"] = python_tasks_per_s(scenario, learner, 2 if q else 5)
    for replicas, groups in ((1, 8 if q else 24), (64, 1 if q else 3)):
        rate, _ = compiled_tasks_per_s(scenario, learner, replicas, groups)
        figures[f"amcoedge_compiled_x{replicas}_tasks_per_s"] = rate
    figures["amcoedge_compiled_x64_over_python"] = (
        figures["amcoedge_compiled_x64_tasks_per_s"] / figures["amcoedge_python_tasks_per_s"]
    )

    if not args.no_train:
        n = args.train_episodes
        figures["amcoedge_python_train_s_per_episode"] = python_train_seconds_per_episode(
            scenario, 5 if q else 20
        )
        wall, compile_s, last = train_seconds(scenario, [0], n)
        figures[f"amcoedge_train_{n}ep_s"] = wall
        figures["amcoedge_train_compile_s"] = compile_s
        figures[f"amcoedge_train_{n}ep_last50_makespan"] = last
        wall, compile_s, last = train_seconds(scenario, list(range(8)), n)
        figures[f"amcoedge_train_{n}ep_8seeds_s"] = wall
        figures["amcoedge_train_8seeds_compile_s"] = compile_s
        figures[f"amcoedge_train_{n}ep_8seeds_last50_makespan"] = last
        figures[f"amcoedge_python_train_{n}ep_s_estimate"] = (
            figures["amcoedge_python_train_s_per_episode"] * n
        )

    report(figures)


if __name__ == "__main__":
    main()
