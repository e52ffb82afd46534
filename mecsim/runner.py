"""Run a scheduler for some episodes and produce the tidy per-episode table (and per-task table)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .backends import DEFAULT_ENGINE, check_engine, kernel_batch, resolve
from .config import Scenario
from .plugins import call_hook, make_scheduler
from .scheduling import SchedulerError, hook
from .streams import stream
from .tables import episode_row, provenance


def run_episodes(
    simulation,
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
    options: dict[str, Any] | None = None,
    checkpoint: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Run ``episodes`` episodes on ``simulation`` (an engine from `mecsim.backends.resolve`);
    returns (episode table, task table or None). ``options`` and ``checkpoint`` are recorded in
    every row (`mecsim.tables.provenance`)."""
    scenario = simulation.scenario
    source = provenance(scenario, options, simulation.engine, checkpoint)
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
        row = episode_row(
            scenario,
            scheduler_name,
            episode,
            phase,
            result.metrics,
            result.wall_time if timing else None,
            source,
        )
        rows.append(row)
        if on_episode is not None:
            on_episode(row)
        if keep_tasks:
            task_frames.append(
                result.log.frame(
                    scheduler=scheduler_name, model=scenario.model, seed=scenario.seed, phase=phase, **source
                )
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
    engine: str = DEFAULT_ENGINE,
    **kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Build the named scheduler with its own seeded stream and run ``episodes`` episodes.

    ``engine`` (`mecsim.backends`): ``"compiled"`` runs on the JAX kernel (either delay model; many
    episodes per vmapped call), ``"python"`` on the SimPy path;
    ``"auto"`` uses the kernel when the
    scheduler has a JAX-native form for the scenario, else the SimPy path. With ``checkpoint``, the
    scheduler loads it and decides greedily.
    """
    check_engine(engine)
    scheduler = make_scheduler(
        scheduler_name, scenario, rng=stream(scenario.seed, "scheduler"), **(scheduler_options or {})
    )
    if checkpoint is not None:
        if hook(scheduler, "load") is None:
            raise SchedulerError(
                f"scheduler {scheduler_name!r} has no learned parameters to load: --checkpoint {checkpoint!r} "
                f"applies to learners (amcoedge, drlcoedge, smcoedge, ...)"
            )
        call_hook(scheduler, "load", str(checkpoint))
        call_hook(scheduler, "train", False)
    first = kwargs.get("first_episode", 0)
    simulation = resolve(
        engine,
        scenario,
        scheduler,
        episodes=range(first, first + episodes),
        stream=kwargs.get("stream_name", "arrivals"),
    )
    return run_episodes(
        simulation, scheduler_name, episodes, options=scheduler_options, checkpoint=checkpoint, **kwargs
    )


def run_many(
    scenarios: Sequence[Scenario],
    scheduler_name: str,
    episodes: int,
    *,
    scheduler_options: dict[str, Any] | None = None,
    timing: bool = True,
    engine: str = DEFAULT_ENGINE,
    group: int = 16,
) -> list[pd.DataFrame]:
    """`run` for several scenarios (seeds included): one episode table per scenario, in order.

    On the kernel, every (scenario, episode) pair is a replica, and replicas of similar
    length share vmapped calls of ``group``. Each table equals that scenario's own `run` (a
    replica's decisions follow its own seed) up to the last bit of rounding, which can differ
    with the vectorisation of a differently composed group (seen: 6e-17 s). Where the kernel
    does not apply (a scheduler without a JAX form, ``engine="python"``, scenarios that differ
    in B, slots, delay model, allocation rule or flags; N may differ)
    the scenarios run one by one.
    """
    check_engine(engine)
    options = dict(scheduler_options or {})
    batch = kernel_batch(engine, scenarios, scheduler_name, options)
    if batch is None:  # one by one (`run` says why, where "compiled" cannot be honoured)
        return [
            run(
                sc,
                scheduler_name,
                episodes,
                scheduler_options=options,
                engine=engine,
                progress=False,
                timing=timing,
            )[0]
            for sc in scenarios
        ]
    schedulers, policy = batch
    from .backends.kernel.simulation import run_scenarios

    results = run_scenarios(scenarios, episodes, policy, group)
    for i, sched in enumerate(schedulers):
        for e in range(episodes if hook(sched, "on_episode_end") is not None else 0):
            call_hook(sched, "on_episode_end", e, results[i, e][0], episode=e)
    return [
        pd.DataFrame(
            [
                episode_row(
                    scenarios[i],
                    scheduler_name,
                    e,
                    "online",
                    results[i, e][0],
                    results[i, e][1] if timing else None,
                    provenance(scenarios[i], options, "compiled"),
                )
                for e in range(episodes)
            ]
        )
        for i in range(len(scenarios))
    ]
