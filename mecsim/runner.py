"""Run a scheduler for some episodes and produce the tidy per-episode table (and per-task table)."""
from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import __version__
from .arrivals import stream
from .config import Scenario
from .engine import Simulation
from .scheduling import SchedulerError, make_scheduler


ENGINES = ("auto", "python", "compiled")
"""``python``: SimPy engine; ``compiled``: the JAX kernel (`mecsim.kernel`); ``auto``: the kernel where the scheduler allows."""


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the source tree the package runs from ('unknown' outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(scenario: Scenario) -> dict[str, Any]:
    return {"mecsim_version": __version__, "git_commit": git_commit(), "config_hash": scenario.config_hash()}


def episode_row(scenario: Scenario, scheduler: str, episode: int, phase: str, metrics: dict, wall_time: float | None):
    row: dict[str, Any] = {
        "scheduler": scheduler,
        "model": scenario.model,
        "preset": scenario.preset,
        "seed": scenario.seed,
        "episode": episode,
        "phase": phase,
    }
    row.update(metrics)
    if wall_time is not None:
        row["wall_time_s"] = wall_time
    for key, value in scenario.flat().items():
        row.setdefault(key, list(value) if isinstance(value, (list, tuple)) else value)
    row.update(provenance(scenario))
    return row


def run_episodes(
    simulation: Simulation,
    scheduler_name: str,
    episodes: int,
    *,
    phase: str = "online",
    first_episode: int = 0,
    stream_name: str = "arrivals",
    keep_tasks: bool = False,
    timing: bool = True,
    progress: bool | None = None,
    on_episode: Callable[[dict], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Run ``episodes`` episodes on ``simulation``; returns (episode table, task table or None)."""
    scenario = simulation.scenario
    rows, task_frames = [], []
    bar = tqdm(
        range(first_episode, first_episode + episodes),
        desc=f"{scheduler_name} [{scenario.model}, {phase}]",
        unit="ep",
        disable=None if progress is None else not progress,  # None: only on a terminal
        leave=False,
    )
    for episode in bar:
        result = simulation.run_episode(episode, stream=stream_name)
        row = episode_row(scenario, scheduler_name, episode, phase, result.metrics, result.wall_time if timing else None)
        rows.append(row)
        if on_episode is not None:
            on_episode(row)
        if keep_tasks:
            task_frames.append(
                result.log.frame(scheduler=scheduler_name, model=scenario.model, seed=scenario.seed, phase=phase)
            )
        recent = [r["mean_makespan"] for r in rows[-50:]]
        bar.set_postfix(makespan=f"{np.mean(recent):.4f}", fail=f"{row['failure_rate']:.3f}")
    episodes_df = pd.DataFrame(rows)
    tasks_df = pd.concat(task_frames, ignore_index=True) if keep_tasks and task_frames else None
    return episodes_df, tasks_df


def run(
    scenario: Scenario,
    scheduler_name: str,
    episodes: int,
    *,
    scheduler_options: dict[str, Any] | None = None,
    checkpoint: str | None = None,
    engine: str = "auto",
    **kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Build the named scheduler with its own seeded stream and run ``episodes`` episodes.

    ``engine``: ``"compiled"`` runs the slotted model on the JAX kernel (`mecsim.kernel`, many
    episodes per vmapped call), ``"python"`` on the SimPy/NumPy path; ``"auto"`` uses the kernel
    when the scheduler has a JAX-native form (``jax_policy``) for the scenario, else Python.
    """
    if engine not in ENGINES:
        raise SchedulerError(f"engine {engine!r}: allowed {', '.join(ENGINES)}")
    scheduler = make_scheduler(
        scheduler_name, scenario, rng=stream(scenario.seed, "scheduler"), **(scheduler_options or {})
    )
    if checkpoint is not None:
        scheduler.load(checkpoint)
        scheduler.train(False)
    simulation = Simulation(scenario, scheduler)
    if engine == "compiled" or (engine == "auto" and hasattr(scheduler, "jax_policy")):
        from .kernel import compiled_simulation  # imports JAX only when the kernel may be used

        first = kwargs.get("first_episode", 0)
        planned = range(first, first + episodes)
        stream_name = kwargs.get("stream_name", "arrivals")
        simulation = compiled_simulation(scenario, scheduler, engine, episodes=planned, stream=stream_name) or simulation
    return run_episodes(simulation, scheduler_name, episodes, **kwargs)


def run_many(
    scenarios: Sequence[Scenario],
    scheduler_name: str,
    episodes: int,
    *,
    scheduler_options: dict[str, Any] | None = None,
    timing: bool = True,
    engine: str = "auto",
    group: int = 16,
) -> list[pd.DataFrame]:
    """`run` for several scenarios (seeds included): one episode table per scenario, in order.

    On the kernel, every (scenario, episode) pair is a replica, and replicas of similar
    length share vmapped calls of ``group``. Each table equals that scenario's own `run` (a
    replica's decisions follow its own seed) up to the last bit of rounding, which can differ
    with the vectorisation of a differently composed group (seen: 6e-17 s). Where the kernel
    does not apply (the event model, a scheduler without a JAX form, ``engine="python"``,
    scenarios that differ in B, slots, allocation rule or accounting flags; N may differ)
    the scenarios run one by one.
    """
    if engine not in ENGINES:
        raise SchedulerError(f"engine {engine!r}: allowed {', '.join(ENGINES)}")
    options = dict(scheduler_options or {})
    schedulers, policy = [], None
    if engine != "python" and scenarios and all(sc.model == "slotted" for sc in scenarios):
        schedulers = [make_scheduler(scheduler_name, sc, rng=stream(sc.seed, "scheduler"), **options) for sc in scenarios]
        policy = _shared_jax_policy(scenarios, schedulers)
    if policy is None:  # one by one (`run` says why, where "compiled" cannot be honoured)
        return [
            run(sc, scheduler_name, episodes, scheduler_options=options, engine=engine, progress=False, timing=timing)[0]
            for sc in scenarios
        ]
    from .kernel import Replica, expected_length, run_batch

    replicas = [(i, Replica(sc, e)) for i, sc in enumerate(scenarios) for e in range(episodes)]
    replicas.sort(key=lambda item: expected_length(item[1].scenario, "flat"))  # similar lengths share a call
    rows: dict[tuple[int, int], dict] = {}
    metrics: dict[tuple[int, int], dict] = {}
    for start in range(0, len(replicas), group):
        chunk = replicas[start : start + group]
        batch = run_batch([rep for _, rep in chunk], policy)
        share = batch.wall_time / len(chunk)
        for j, (i, rep) in enumerate(chunk):
            key = (i, rep.episode)
            metrics[key] = batch.metrics(j, rep)
            rows[key] = episode_row(rep.scenario, scheduler_name, rep.episode, "online", metrics[key], share if timing else None)
    for i, sched in enumerate(schedulers):
        end = getattr(sched, "on_episode_end", None)
        for e in range(episodes if end is not None else 0):
            end(e, metrics[i, e])
    return [pd.DataFrame([rows[i, e] for e in range(episodes)]) for i in range(len(scenarios))]


def _shared_jax_policy(scenarios: Sequence[Scenario], schedulers: list):
    """The one JAX policy all ``schedulers`` share (so their episodes can share kernel calls), or None."""
    from .kernel import Spec, jax_policy_of

    policies = [jax_policy_of(s) for s in schedulers]
    shared = policies[0]
    same = all(
        p is not None and p.decide == shared.decide and p.prepare == shared.prepare and p.params is None
        for p in policies
    )
    try:
        Spec.of_group(scenarios)
    except ValueError:
        return None
    return shared if same else None
