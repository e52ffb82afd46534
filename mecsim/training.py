"""Train a learning scheduler on the engine, then evaluate it greedily on fresh traces.

``train`` runs ``episodes`` online episodes (phase ``"online"``: exploration and learning
included, the metric the papers report), switches the scheduler to evaluation mode and
runs ``eval_episodes`` greedy episodes on traces drawn from the ``"evaluation"`` stream
(phase ``"eval"``: different arrivals from training, same density vector). It writes

* ``out_dir/episodes.parquet`` — the tidy per-episode table, online rows then eval rows;
* ``out_dir/checkpoint/`` — the scheduler's ``save`` output, loadable with
  ``mecsim run --scheduler NAME --checkpoint out_dir/checkpoint``.

``engine`` (`mecsim.backends`): ``"compiled"`` trains on the JAX kernel
(`mecsim.backends.kernel.training.KernelTrainer`: the whole episode, learning included, in
one compiled call) and evaluates there too; ``"python"`` uses the SimPy engine; ``"auto"``
(the default) takes the kernel when the scheduler and scenario allow it (a learner with a
kernel form, slotted model). Both paths call the learner's same functions with the same
keys; their curves agree in distribution, not sample by sample, because the SimPy path
pads a slot's decisions to another width than the kernel's scan.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .backends import DEFAULT_ENGINE, check_engine, resolve, resolve_trainer
from .config import Scenario
from .engine import Simulation
from .plugins import call_hook, make_scheduler
from .results import write_parquet
from .runner import run_episodes
from .streams import stream


@dataclass
class TrainingResult:
    episodes: pd.DataFrame  # online rows then eval rows
    scheduler: Any
    checkpoint: Path | None  # None when not saved (no out_dir)
    table: Path | None
    train_wall_s: float

    def online_mean(self, last: int = 50) -> float:
        """Mean make-span of the last ``last`` online episodes."""
        online = self.episodes[self.episodes["phase"] == "online"]
        return float(online["mean_makespan"].tail(last).mean())

    def eval_mean(self) -> float:
        """Mean make-span of the greedy evaluation episodes (NaN if none)."""
        return float(self.episodes.loc[self.episodes["phase"] == "eval", "mean_makespan"].mean())


def train(
    scenario: Scenario,
    scheduler_name: str,
    episodes: int,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    *,
    eval_episodes: int = 10,
    options: dict[str, Any] | None = None,
    progress: bool | None = None,
    timing: bool = True,
    engine: str = DEFAULT_ENGINE,
) -> TrainingResult:
    """Online training for ``episodes`` episodes, then ``eval_episodes`` greedy episodes on fresh traces.

    ``seed`` (default: the scenario's) seeds arrivals, exploration, replay sampling and the
    network initialisation. With ``timing=False`` the table is byte-reproducible.
    """
    if seed is not None and seed != scenario.seed:
        scenario = scenario.replace(seed=seed)
    options = dict(options or {})
    check_engine(engine)
    started = time.perf_counter()
    trainer = resolve_trainer(engine, [scenario], scheduler_name, options)
    if trainer is not None:
        (online,) = trainer.run(episodes, timing=timing)
        (scheduler,) = trainer.write_back()
    else:
        scheduler = make_scheduler(
            scheduler_name, scenario, rng=stream(scenario.seed, "scheduler"), **options
        )
        online, _ = run_episodes(
            Simulation(scenario, scheduler),
            scheduler_name,
            episodes,
            phase="online",
            timing=timing,
            progress=progress,
            options=options,
        )
    train_wall = time.perf_counter() - started
    table = _with_evaluation(
        scenario, scheduler, scheduler_name, online, eval_episodes, options, timing, progress, engine
    )

    out = Path(out_dir) if out_dir is not None else None
    checkpoint = table_path = None
    if out is not None:
        checkpoint = out / "checkpoint"
        call_hook(scheduler, "save", str(checkpoint))
        table_path = write_parquet(table, out / "episodes.parquet")
    return TrainingResult(table, scheduler, checkpoint, table_path, train_wall)


def train_many(
    scenarios: Sequence[Scenario],
    scheduler_name: str,
    episodes: int,
    *,
    eval_episodes: int = 10,
    options: dict[str, Any] | None = None,
    timing: bool = True,
    engine: str = DEFAULT_ENGINE,
) -> list[TrainingResult]:
    """`train` for several scenarios (seeds included) at once: one result per scenario, in order.

    On the kernel (``engine`` ``"compiled"``, or ``"auto"`` where it applies) every replica
    trains in the same compiled calls and follows its own random streams, so each result is
    that scenario's own `train` run, up to the last bit of rounding where the vectorisation
    of a different replica count differs (which can, rarely, tip a greedy choice). The
    scenarios must share the kernel's static shape (B, slots, allocation rule, accounting
    flags; N may differ) to train together; elsewhere they run one by one.
    """
    options = dict(options or {})
    check_engine(engine)
    started = time.perf_counter()
    trainer = resolve_trainer(engine, list(scenarios), scheduler_name, options)
    if trainer is None:
        return [
            train(
                sc,
                scheduler_name,
                episodes,
                eval_episodes=eval_episodes,
                options=options,
                progress=False,
                timing=timing,
                engine=engine,
            )
            for sc in scenarios
        ]
    onlines = trainer.run(episodes, timing=timing)
    schedulers = trainer.write_back()
    train_wall = (time.perf_counter() - started) / len(scenarios)
    return [
        TrainingResult(
            _with_evaluation(
                sc, sched, scheduler_name, online, eval_episodes, options, timing, False, engine
            ),
            sched,
            None,
            None,
            train_wall,
        )
        for sc, sched, online in zip(scenarios, schedulers, onlines)
    ]


def _with_evaluation(
    scenario, scheduler, scheduler_name, online, eval_episodes, options, timing, progress, engine
):
    """The online table followed by ``eval_episodes`` greedy episodes on the evaluation stream."""
    frames = [online]
    call_hook(scheduler, "train", False)
    if eval_episodes > 0:
        simulation = resolve(engine, scenario, scheduler, episodes=range(eval_episodes), stream="evaluation")
        evaluation, _ = run_episodes(
            simulation,
            scheduler_name,
            eval_episodes,
            phase="eval",
            stream_name="evaluation",
            timing=timing,
            progress=progress,
            options=options,
        )
        frames.append(evaluation)
    table = pd.concat(frames, ignore_index=True)
    return table
