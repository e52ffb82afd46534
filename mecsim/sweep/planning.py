"""Planning a sweep: which cells can run here, how they are batched, what they will cost.

Cells on the compiled kernel that differ only in seed, capacities, deadline, arrival
probability, tasks per BS or the other per-replica numbers share compiled calls
(`mecsim.training.train_many`, `mecsim.runner.run_many`). A batch holds cells of similar
scan length (padding to the busiest replica is wasted work), and few enough for the
workers to share the load. The batches depend only on the experiment's cells, so a
resumed sweep recomputes them bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Scenario
from ..plugins import resolve_scheduler
from ..scheduling import SchedulerError
from .cells import Cell, Experiment
from .schema import SweepError

BATCH_CELLS = 24
BATCH_SPREAD = 1.15  # largest / smallest expected scan length within one batch


def on_kernel(cell: Cell) -> bool:
    """Whether the cell may run on the compiled kernel (its engine allows it)."""
    return cell.engine != "python"


def cost(cell: Cell) -> float:
    """Rough cost in seconds (tasks x episodes x a per-task time), used to start long cells first.

    Per-task times measured on one core: the compiled kernel ~2-3 µs per task, the Python
    paths 15-100 µs; greedy optimal's work grows with the 2^B - 1 subsets it evaluates.
    """
    s = cell.scenario
    if on_kernel(cell):
        per_task = 3e-6 if cell.learner else 1.5e-6
    else:
        per_task = 60e-6 if cell.learner else (15e-6 if cell.scheduler == "local" else 40e-6)
    if cell.scheduler == "optimal":
        per_task *= 2**s.n_bs / 32
    episodes = cell.episodes + (cell.eval_episodes if cell.learner else 0)
    return max(expected_tasks(s), 1.0) * episodes * per_task


def missing_requirements(cell: Cell) -> list[str]:
    """Why this process could not run the cell ([] when it can)."""
    try:
        resolve_scheduler(cell.scheduler)
    except SchedulerError as err:
        return [str(err)]
    except ImportError as err:
        return [f"scheduler {cell.scheduler!r} cannot be imported: {err}"]
    return []


def plan(experiment: Experiment, echo: Callable[[str], None] = print) -> list[Cell]:
    """The experiment's cells, leaving out optional methods/blocks whose schedulers are missing.

    Raises `SweepError` naming the missing scheduler when a required cell cannot run.
    """
    skip_methods: set[str] = set()
    skip_blocks: set[int] = set()
    cells = experiment.cells()
    checked: dict[str, list[str]] = {}
    required_problems: dict[str, set[str]] = {}
    for cell in cells:
        if cell.scheduler not in checked:
            checked[cell.scheduler] = missing_requirements(cell)
        problems = checked[cell.scheduler]
        if not problems:
            continue
        method = experiment.methods[cell.method]
        if method.optional:
            skip_methods.add(cell.method)
        elif all(experiment.blocks[i].optional for i in cell.blocks):
            skip_blocks.update(cell.blocks)
        else:
            required_problems.setdefault("; ".join(problems), set()).add(
                f"{cell.method} [{cell.scenario.model}]"
            )
    if required_problems:
        lines = [f"{why} (needed by {', '.join(sorted(who))})" for why, who in required_problems.items()]
        raise SweepError(f"experiment {experiment.name!r} cannot run here:\n  " + "\n  ".join(lines))
    if skip_methods or skip_blocks:
        what = [f"method {m}" for m in sorted(skip_methods)]
        what += [f"sweep block #{i + 1} ({experiment.blocks[i].name})" for i in sorted(skip_blocks)]
        echo(f"leaving out optional {', '.join(what)}: not available in this installation")
        cells = experiment.cells(skip_methods, skip_blocks)
    return cells


# -- batches -------------------------------------------------------------------------------------
def scan_length(cell: Cell) -> float:
    """The kernel's expected scan length for the cell: tasks per slot for learners and the event model
    (their kernels step slot by slot, padded to the busiest slot), tasks per episode otherwise."""
    from ..backends.kernel.layout import expected_length

    nested = cell.learner or cell.scenario.model == "event"
    return expected_length(cell.scenario, "nested" if nested else "flat")


@cache
def state_depends_on_tasks_per_slot(scheduler: str) -> bool:
    """Whether the scheduler's learner state is shaped by N, so that its cells batch only with cells of the
    same N: the simulation pads N to a batch's largest, but not inside such a state. Cached: resolving a
    scheduler scans the installed entry points (about 6 ms), and `batch_key` runs once per cell."""
    return bool(getattr(resolve_scheduler(scheduler), "state_depends_on_tasks_per_slot", False))


@cache
def batch_limit(scheduler: str) -> int:
    """The most cells of ``scheduler`` one batch may hold: the plugin's ``sweep_batch_cells``, else
    `BATCH_CELLS` (`plan_batches` keeps to the smaller of this and its ``max_cells``). A batch runs on one
    worker, so a learner whose cost per replica does not fall with the batch's size gains nothing from large
    batches and leaves the other workers idle."""
    limit = getattr(resolve_scheduler(scheduler), "sweep_batch_cells", BATCH_CELLS)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise SweepError(
            f"scheduler {scheduler!r}: sweep_batch_cells must be a whole number >= 1, got {limit!r}"
        )
    return limit


def batch_key(cell: Cell) -> tuple | None:
    """Cells with equal keys may share kernel calls (`plan_batches`); None: the cell runs alone."""
    if not on_kernel(cell):
        return None
    from ..backends.kernel.shape import (
        Spec,  # the kernel's static shape; N may differ (padded to the largest)
    )

    options = json.dumps(cell.options, sort_keys=True, default=str)
    eval_episodes = cell.eval_episodes if cell.learner else 0
    own_n = state_depends_on_tasks_per_slot(cell.scheduler)
    return (
        cell.method,
        cell.scheduler,
        cell.learner,
        cell.episodes,
        eval_episodes,
        options,
        cell.engine,
        cell.timing,
        replace(Spec.from_scenario(cell.scenario), tasks_per_slot=0, window=0),  # both: the group's largest
        cell.scenario.tasks_per_slot if own_n else None,
    )


def plan_batches(
    cells: list[Cell], max_cells: int = BATCH_CELLS, spread: float = BATCH_SPREAD
) -> list[list[Cell]]:
    """Group ``cells`` into batches, each run as one task on one worker.

    The grouping depends only on the cells given (not on which are finished), so a resumed
    sweep runs the same batches and computes bit-identical rows; a cell run in another batch (or
    alone) gives the same rows up to the last bit of rounding.
    """
    batches: list[list[Cell]] = []
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        key = batch_key(cell)
        if key is None:
            batches.append([cell])
        else:
            groups.setdefault(key, []).append(cell)
    for members in groups.values():
        members.sort(key=lambda c: (scan_length(c), c.cell_id))
        limit = min(max_cells, batch_limit(members[0].scheduler))
        current: list[Cell] = []
        for cell in members:
            if current and (
                len(current) >= limit or scan_length(cell) > spread * max(scan_length(current[0]), 1.0)
            ):
                batches.append(current)
                current = []
            current.append(cell)
        batches.append(current)
    return batches


# -- projected cost ------------------------------------------------------------------------------
def expected_tasks(scenario: Scenario) -> float:
    """Expected tasks per episode (decision slots × BSs × task slots × arrival probability)."""
    return scenario.decision_slots * scenario.n_bs * scenario.tasks_per_slot * scenario.arrival_prob


def fixed_and_per_task(tasks: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Seconds per episode as ``a + b·tasks``, fitted by least squares to cells of one group.

    Part of an episode's cost does not depend on the tasks (a learner's network on every task slot, its
    transitions and updates; a batch's compilation, spread over its episodes), so cost is not proportional
    to the tasks: over `paper-event`'s cells, pricing in proportion to the tasks missed a method's total by
    up to 27 %. The fit needs two task levels and must give a, b >= 0; otherwise the cost is taken as
    proportional (a = 0, b = the median rate)."""
    if np.unique(tasks).size >= 2:
        a, b = np.linalg.lstsq(np.column_stack([np.ones_like(tasks), tasks]), seconds, rcond=None)[0]
        if a >= 0 and b >= 0:
            return float(a), float(b)
    return 0.0, float(np.median(seconds / tasks))


RATE_COLUMNS = ["method", "model", "engine", "faults", "s_per_episode", "s_per_task_episode", "cells"]


def calibration(results_dir: str | Path) -> pd.DataFrame:
    """Measured seconds per episode, as a fixed part and a part per expected task (`fixed_and_per_task`),
    per method, model, engine used and whether the scenario had faults (they cost the kernel several times
    more), from every timings.csv. A line written before ``engine_used`` was recorded counts under its
    configured engine; one before ``faults`` was, as fault-free."""
    frames = [pd.read_csv(p) for p in Path(results_dir).glob("*/timings.csv")]
    if not frames:
        return pd.DataFrame(columns=RATE_COLUMNS)
    t = pd.concat(frames, ignore_index=True)
    t = t[t["expected_tasks_per_episode"] > 0]
    if "engine_used" in t:
        t["engine"] = t["engine_used"].fillna(t["engine"])
    t["faults"] = t["faults"].fillna(False).astype(bool) if "faults" in t else False
    rows = []
    for key, group in t.groupby(["method", "model", "engine", "faults"]):
        tasks = group["expected_tasks_per_episode"].to_numpy(float)
        a, b = fixed_and_per_task(tasks, group["wall_s"].to_numpy(float) / group["episodes"].to_numpy(float))
        rows.append((*key, a, b, len(group)))
    return pd.DataFrame(rows, columns=RATE_COLUMNS)


def rate_table(rates: pd.DataFrame) -> dict[tuple, tuple[float, float]]:
    """`calibration`'s (seconds per episode, per task and episode) by (method, model, engine used, faults)."""
    return {
        (r.method, r.model, r.engine, bool(r.faults)): (r.s_per_episode, r.s_per_task_episode)
        for r in rates.itertuples()
    }


# the engines a cell of each configured engine may have run on, in the order its rate is looked up
# ("auto": the kernel wherever the method has a JAX form; "auto" itself: lines of older runs)
ENGINES_USED = {
    "auto": ("compiled", "compiled+python", "python", "auto"),
    "compiled": ("compiled",),
    "python": ("python",),
}


def measured_cost(cell: Cell, table: dict[tuple, tuple[float, float]]) -> float | None:
    """Projected CPU seconds of ``cell`` from measured rates (episodes × (fixed + per task × expected
    tasks)); None if unmeasured."""
    faulty = cell.scenario.faults.active
    rates = (table.get((cell.method, cell.scenario.model, e, faulty)) for e in ENGINES_USED[cell.engine])
    rate = next((r for r in rates if r is not None), None)
    if rate is None:
        return None
    fixed, per_task = rate
    episodes = cell.episodes + (cell.eval_episodes if cell.learner else 0)
    return episodes * (fixed + per_task * expected_tasks(cell.scenario))


def estimate(cells: list[Cell], rates: pd.DataFrame) -> tuple[float, list[Cell]]:
    """Projected CPU seconds of ``cells``, and the cells with no measurement."""
    table = rate_table(rates)
    total, unknown = 0.0, []
    for cell in cells:
        seconds = measured_cost(cell, table)
        if seconds is None:
            unknown.append(cell)
        else:
            total += seconds
    return total, unknown


def ordering_cost(cells: list[Cell], rates: pd.DataFrame) -> dict[str, float]:
    """Per cell id, the seconds by which batches are ordered (longest first): measured where a rate is
    known, else the rough `cost` (which cannot tell, e.g., a diffusion learner's per-task time from a DQN's)."""
    table, out = rate_table(rates), {}
    for cell in cells:
        seconds = measured_cost(cell, table)
        out[cell.cell_id] = cost(cell) if seconds is None else seconds
    return out
