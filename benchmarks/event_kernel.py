"""Tasks per second of the compiled event model (`mecsim.backends.kernel.event`) against its SimPy path.

Prints one ``name: value`` line per figure. Usage: ``python benchmarks/event_kernel.py [--quick] [--no-train]``.
Without ``--quick`` the SimPy path trains AMCoEdge for the whole run (``--train-episodes``, 500) as the kernel
does, so both training times are measured; with it, the SimPy figure is an estimate from 3 episodes.

The scenario is the AMCoEdge default point in the event model (`experiments/paper.toml`'s event cells:
common preset, FIFO links and servers, deadline kept); the ``event_faults_*`` figures add the heaviest
server outages of `experiments/faults.toml` (down 30 % of the time, mean down time 2 s). Figures are measured as in `benchmarks/kernel.py`
(end to end, compilation reported apart, best of several timed calls); ``xR``: R episodes per vmapped
call. Ratios are between figures of the same run. The ``*_over_python`` ratios divide two best-of
figures, which may come from minutes apart on a machine whose speed drifts; the ``*_paired_*`` ones time
the SimPy path (2 episodes) and the kernel (one ×64 call) back to back in each of 9 rounds and give the
median, least and greatest of the per-round ratios, and the ratio of the two sides' rates over all rounds
(``total``).
"""

from __future__ import annotations

from kernel import (
    arguments,
    compiled_tasks_per_s,
    paired_over_python,
    python_tasks_per_s,
    python_train_seconds,
    python_train_seconds_per_episode,
    report,
    start_figures,
    train_seconds,
)

from mecsim.config import Scenario
from mecsim.plugins import make_scheduler


def main() -> None:
    args = arguments(__doc__)
    q = args.quick
    figures = start_figures()
    scenario = Scenario(model="event")

    for name in ("optimal", "amcoedge"):
        scheduler = make_scheduler(name, scenario)
        if name == "amcoedge":
            scheduler.train(False)  # greedy decisions of an (untrained) network
        figures[f"event_{name}_python_tasks_per_s"] = python_tasks_per_s(scenario, scheduler, 2 if q else 5)
        for replicas, groups in ((1, 4 if q else 12), (8, 2 if q else 6), (64, 1 if q else 3)):
            rate, compile_s = compiled_tasks_per_s(scenario, scheduler, replicas, groups)
            figures[f"event_{name}_compiled_x{replicas}_tasks_per_s"] = rate
            figures[f"event_{name}_compiled_x{replicas}_compile_s"] = compile_s
        for replicas in (1, 8, 64):
            figures[f"event_{name}_compiled_x{replicas}_over_python"] = (
                figures[f"event_{name}_compiled_x{replicas}_tasks_per_s"]
                / figures[f"event_{name}_python_tasks_per_s"]
            )
        for stat, value in paired_over_python(scenario, scheduler, 64, 3 if q else 9).items():
            figures[f"event_{name}_compiled_x64_over_python_paired_{stat}"] = value

    faulty = scenario.replace(
        faults={"processes": [{"target": "server", "mean_up": 4.66667, "mean_down": 2}]}
    )
    scheduler = make_scheduler("optimal", faulty)
    figures["event_faults_optimal_python_tasks_per_s"] = python_tasks_per_s(faulty, scheduler, 2 if q else 5)
    rate, compile_s = compiled_tasks_per_s(faulty, scheduler, 64, 1 if q else 3)
    figures["event_faults_optimal_compiled_x64_tasks_per_s"] = rate
    figures["event_faults_optimal_compiled_x64_compile_s"] = compile_s
    figures["event_faults_optimal_compiled_x64_over_python"] = (
        rate / figures["event_faults_optimal_python_tasks_per_s"]
    )

    if not args.no_train:
        n = args.train_episodes
        if q:  # an estimate from 3 episodes, most of them before learning starts
            python_s = n * python_train_seconds_per_episode(scenario, 3)
            figures[f"event_amcoedge_python_train_{n}ep_s_estimate"] = python_s
        else:  # the whole run: the same learner, transitions and keys as the kernel's
            python_s, python_last = python_train_seconds(scenario, n)
            figures[f"event_amcoedge_python_train_{n}ep_s"] = python_s
            figures[f"event_amcoedge_python_train_{n}ep_last50_makespan"] = python_last
        wall, compile_s, last = train_seconds(scenario, [0], n)
        figures[f"event_amcoedge_train_{n}ep_s"] = wall
        figures["event_amcoedge_train_compile_s"] = compile_s
        figures[f"event_amcoedge_train_{n}ep_last50_makespan"] = last
        figures[f"event_amcoedge_train_{n}ep_python_over_kernel"] = python_s / wall
        wall, _, last = train_seconds(scenario, list(range(8)), n)
        figures[f"event_amcoedge_train_{n}ep_8seeds_s"] = wall
        figures[f"event_amcoedge_train_{n}ep_8seeds_last50_makespan"] = last

    report(figures)


if __name__ == "__main__":
    main()
