"""Sweeps: an experiment file (TOML) expanded into cells, run in parallel on Dask, one parquet part per cell.

An *experiment* (``experiments/<name>.toml``; the schema is documented at the top of
``experiments/paper.toml``) names a default scenario, the methods with their episode
counts, seeds, and blocks of cells (``[[sweep]]``): which methods, on which environment
presets and delay models, optionally varying one scenario field over a list of values.

A *cell* is one fully specified run: scenario (seed included) × method × engine, with its
episode counts and options. Its identity is the SHA-256 of its canonical JSON
(`Cell.identity`), so the same cell has the same id in every process and on every
machine, and any change to what it computes gives a new id. The labels saying which
sweep blocks a cell belongs to are *not* part of the identity: the default point lies
on every sweep and is computed once.

`run_sweep` runs the cells that have no part yet on a Dask cluster (a `LocalCluster`
with one single-threaded worker process per core, or an existing cluster at
``--scheduler-address`` / ``$MECSIM_DASK_ADDRESS``) and writes each finished cell
atomically to ``results/<experiment>/part-<cell_id>.parquet``. Workers return tables to
the client, which does all the writing, so a remote cluster needs no shared file system.
An interrupted sweep resumes by skipping finished cells; temporary files of an
interrupted write are removed at the next start.

>>> exp = load_experiment("quick")
>>> cells = exp.cells()
>>> len({c.cell_id for c in cells}) == len(cells)
True
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import math
import os
import socket
import sys
import time
import tomllib
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from .config import PRESETS, ConfigError, Scenario, build_scenario

ADDRESS_ENV = "MECSIM_DASK_ADDRESS"
DEFAULT_ENGINE = "python"  # the SimPy engine with the schedulers' Python decisions; others need mecsim.kernel
EVENT_TOPIC = "mecsim-sweep"

# Worker processes: one thread each for BLAS and XLA, so that N workers use N cores.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}

# Compiled kernels are kept on disk (JAX's persistent compilation cache), so that workers and later
# runs reuse what one process compiled; "off" disables it.
CACHE_ENV = "MECSIM_JAX_CACHE"


def worker_environment() -> dict[str, str]:
    """Environment of local worker processes: one thread each, and the shared compilation cache."""
    env = dict(THREAD_ENV)
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mecsim" / "jax"
    cache = os.environ.get(CACHE_ENV) or str(default)
    if cache != "off" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


SWEEP_LABELS = ("default", "deadline", "arrival_prob", "tasks_per_slot", "capacity", "convergence")

# Identity columns written in front of the runner's columns in every part.
LABEL_COLUMNS = ("experiment", "sweep", "swept_value", "sweeps")
CELL_COLUMNS = ("cell_id", "method", "method_kind", "engine", "episodes_planned")


class SweepError(RuntimeError):
    """An experiment file is invalid, a module a cell needs is missing, or cells failed."""


# -- experiment definition -----------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    scheduler: str
    episodes: int
    learner: bool = False
    preset: str | None = None  # the method's own published environment preset
    options: dict[str, Any] = field(default_factory=dict)
    optional: bool = False
    engine: str | None = None  # overrides [run] engine for this method


@dataclass(frozen=True)
class Block:
    """One ``[[sweep]]`` block: methods × presets × models × values of one parameter."""

    name: str
    parameter: str | None
    values: list[Any]
    x: list[float]
    methods: list[str]
    presets: list[str]
    models: list[str]
    fixed: dict[str, Any]
    optional: bool


@dataclass
class Cell:
    """One run: a scenario (seed included) × method × engine; labels say which sweeps it belongs to."""

    experiment: str
    scenario: Scenario
    method: str
    scheduler: str
    episodes: int
    learner: bool
    eval_episodes: int
    options: dict[str, Any]
    engine: str
    timing: bool
    labels: list[tuple[str, float]] = field(default_factory=list)  # (sweep name, swept value)
    blocks: list[int] = field(default_factory=list)  # indices of the [[sweep]] blocks that list this cell

    def identity(self) -> dict[str, Any]:
        """Everything that determines the cell's output rows (not the sweep labels, not the experiment)."""
        return {
            "scenario": self.scenario.model_dump(mode="json"),
            "method": self.method,
            "scheduler": self.scheduler,
            "episodes": self.episodes,
            "learner": self.learner,
            "eval_episodes": self.eval_episodes if self.learner else 0,
            "options": self.options,
            "engine": self.engine,
            "timing": self.timing,
        }

    @property
    def cell_id(self) -> str:
        return cell_hash(self.identity())

    @property
    def sweep(self) -> str:
        return self.labels[0][0]

    @property
    def swept_value(self) -> float:
        return self.labels[0][1]

    @property
    def sweeps(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.labels))

    def payload(self) -> dict[str, Any]:
        """What a worker needs (plain JSON-able data)."""
        return {"cell_id": self.cell_id, **self.identity()}

    def cost(self) -> float:
        """Rough cost in seconds (tasks x episodes x a per-task time), used to start long cells first.

        Per-task times measured on one core: the compiled kernel ~2-3 µs per task, the Python
        paths 15-100 µs; greedy optimal's work grows with the 2^B - 1 subsets it evaluates.
        """
        s = self.scenario
        tasks = s.decision_slots * s.n_bs * s.tasks_per_slot * s.arrival_prob
        compiled = self.engine != DEFAULT_ENGINE and s.model == "slotted"
        if compiled:
            per_task = 3e-6 if self.learner else 1.5e-6
        else:
            per_task = 60e-6 if self.learner else (15e-6 if self.scheduler == "local" else 40e-6)
        if self.scheduler == "optimal":
            per_task *= 2 ** s.n_bs / 32
        episodes = self.episodes + (self.eval_episodes if self.learner else 0)
        return max(tasks, 1.0) * episodes * per_task

    def describe(self) -> str:
        s = self.scenario
        return (
            f"{self.method} [{s.model}, preset {s.preset}, seed {s.seed}, {self.sweep}"
            + ("" if math.isnan(self.swept_value) else f"={self.swept_value:g}")
            + f"] ({self.cell_id})"
        )


def cell_hash(identity: dict[str, Any]) -> str:
    """Stable 16-hex-digit id of a cell's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class Experiment:
    name: str
    description: str
    path: Path
    seeds: list[int]
    engine: str
    eval_episodes: int
    common_preset: str
    timing: bool
    scenario: dict[str, Any]
    methods: dict[str, Method]
    blocks: list[Block]

    def resolve_preset(self, preset: str, method: Method) -> str | None:
        if preset == "common":
            return self.common_preset
        if preset == "own":
            return method.preset
        return preset

    def cells(self, skip_methods: set[str] = frozenset(), skip_blocks: set[int] = frozenset()) -> list[Cell]:
        """Every cell, in definition order, each once; leaves out the named methods and block indices."""
        cells: dict[str, Cell] = {}
        for index, block in enumerate(self.blocks):
            if index in skip_blocks:
                continue
            for value, x in zip(block.values, block.x):
                for model in block.models:
                    for method_name in block.methods:
                        if method_name in skip_methods:
                            continue
                        method = self.methods[method_name]
                        for preset_spec in block.presets:
                            preset = self.resolve_preset(preset_spec, method)
                            if preset is None:
                                continue  # "own" for a method without a published preset
                            for seed in self.seeds:
                                overrides = dict(block.fixed)
                                if block.parameter is not None:
                                    overrides[block.parameter] = value
                                overrides.update(model=model, preset=preset, seed=seed)
                                try:
                                    scenario = build_scenario(self.scenario, overrides)
                                except ConfigError as err:
                                    raise SweepError(f"{self.path}: sweep {block.name!r}: {err}") from None
                                cell = Cell(
                                    experiment=self.name,
                                    scenario=scenario,
                                    method=method.name,
                                    scheduler=method.scheduler,
                                    episodes=method.episodes,
                                    learner=method.learner,
                                    eval_episodes=self.eval_episodes,
                                    options=dict(method.options),
                                    engine=method.engine or self.engine,
                                    timing=self.timing,
                                )
                                known = cells.setdefault(cell.cell_id, cell)
                                label = (block.name, x)
                                if label not in known.labels:
                                    known.labels.append(label)
                                if index not in known.blocks:
                                    known.blocks.append(index)
        return list(cells.values())

    def memberships(self, cells: list[Cell] | None = None) -> pd.DataFrame:
        """One row per (cell_id, sweep, swept_value): every sweep a cell belongs to."""
        rows = [
            {"cell_id": c.cell_id, "sweep": name, "swept_value": x}
            for c in (self.cells() if cells is None else cells)
            for name, x in c.labels
        ]
        return pd.DataFrame(rows, columns=["cell_id", "sweep", "swept_value"]).drop_duplicates()

    def parameter_of(self, sweep: str) -> str | None:
        for block in self.blocks:
            if block.name == sweep:
                return block.parameter
        return None


def experiments_dirs() -> list[Path]:
    """Where experiment names are looked up: ./experiments, then the source tree's experiments/."""
    dirs = [Path.cwd() / "experiments", Path(__file__).resolve().parent.parent / "experiments"]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def find_experiment(name_or_path: str | Path) -> Path:
    """A TOML path as given, or ``<name>.toml`` in `experiments_dirs`."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SweepError(f"experiment file {path} does not exist")
        return path
    for directory in experiments_dirs():
        candidate = directory / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in experiments_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise SweepError(f"no experiment {str(name_or_path)!r}; known: {', '.join(known) or 'none'} (or give a .toml path)")


_TOP_KEYS = {"name", "description", "run", "scenario", "methods", "sweep"}
_RUN_KEYS = {"seeds", "engine", "eval_episodes", "common_preset", "timing"}
_METHOD_KEYS = {"episodes", "learner", "preset", "scheduler", "options", "optional", "engine"}
_BLOCK_KEYS = {"name", "parameter", "values", "x", "methods", "presets", "models", "set", "optional"}


def _unknown(where: str, given: dict, allowed: set[str], path: Path) -> None:
    extra = sorted(set(given) - allowed)
    if extra:
        raise SweepError(f"{path}: {where}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def load_experiment(name_or_path: str | Path) -> Experiment:
    """Read and check an experiment file (see the schema in ``experiments/paper.toml``)."""
    path = find_experiment(name_or_path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{path}: not valid TOML: {err}") from None
    _unknown("top level", data, _TOP_KEYS, path)
    run = data.get("run", {})
    _unknown("[run]", run, _RUN_KEYS, path)
    seeds = run.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SweepError(f"{path}: [run] seeds = {seeds!r}: need a list of distinct integers >= 0")
    common = run.get("common_preset", "amcoedge")
    if common not in PRESETS:
        raise SweepError(f"{path}: [run] common_preset = {common!r}; known presets: {', '.join(PRESETS)}")
    scenario = data.get("scenario", {})
    try:
        build_scenario(scenario)
    except ConfigError as err:
        raise SweepError(f"{path}: [scenario]: {err}") from None

    methods: dict[str, Method] = {}
    for name, spec in data.get("methods", {}).items():
        _unknown(f"[methods.{name}]", spec, _METHOD_KEYS, path)
        episodes = spec.get("episodes")
        if not isinstance(episodes, int) or episodes < 1:
            raise SweepError(f"{path}: [methods.{name}] episodes = {episodes!r}: need an integer >= 1")
        preset = spec.get("preset")
        if preset is not None and preset not in PRESETS:
            raise SweepError(f"{path}: [methods.{name}] preset = {preset!r}; known presets: {', '.join(PRESETS)}")
        methods[name] = Method(
            name=name,
            scheduler=spec.get("scheduler", name),
            episodes=episodes,
            learner=bool(spec.get("learner", False)),
            preset=preset,
            options=dict(spec.get("options", {})),
            optional=bool(spec.get("optional", False)),
            engine=str(spec["engine"]) if "engine" in spec else None,
        )
    if not methods:
        raise SweepError(f"{path}: no [methods.<name>] tables")

    blocks = []
    for i, spec in enumerate(data.get("sweep", [])):
        where = f"[[sweep]] #{i + 1}"
        _unknown(where, spec, _BLOCK_KEYS, path)
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise SweepError(f"{path}: {where}: needs a name (e.g. one of {', '.join(SWEEP_LABELS)})")
        parameter = spec.get("parameter")
        values = spec.get("values")
        if parameter is None:
            if values is not None:
                raise SweepError(f"{path}: sweep {name!r}: values given without a parameter")
            values, x = [None], [math.nan]
        else:
            if not isinstance(values, list) or not values:
                raise SweepError(f"{path}: sweep {name!r}: parameter {parameter!r} needs a non-empty values list")
            x = spec.get("x", values)
            if len(x) != len(values) or not all(isinstance(v, (int, float)) for v in x):
                raise SweepError(
                    f"{path}: sweep {name!r}: x must give one number per value "
                    f"(values are not all numbers, e.g. capacity vectors, so give x)"
                )
            x = [float(v) for v in x]
        block_methods = spec.get("methods", "all")
        block_methods = list(methods) if block_methods == "all" else list(block_methods)
        missing = [m for m in block_methods if m not in methods]
        if missing:
            raise SweepError(f"{path}: sweep {name!r}: unknown method(s) {', '.join(missing)}; defined: {', '.join(methods)}")
        presets = list(spec.get("presets", ["common"]))
        bad = [p for p in presets if p not in ("common", "own") and p not in PRESETS]
        if bad:
            raise SweepError(f"{path}: sweep {name!r}: presets {bad}: use common, own or a preset name ({', '.join(PRESETS)})")
        models = list(spec.get("models", [scenario.get("model", "slotted")]))
        bad = [m for m in models if m not in ("slotted", "event")]
        if bad:
            raise SweepError(f"{path}: sweep {name!r}: models {bad}: use slotted and/or event")
        blocks.append(
            Block(name, parameter, list(values), list(x), block_methods, presets, models, dict(spec.get("set", {})),
                  bool(spec.get("optional", False)))
        )
    if not blocks:
        raise SweepError(f"{path}: no [[sweep]] blocks")
    return Experiment(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        path=path,
        seeds=list(seeds),
        engine=str(run.get("engine", DEFAULT_ENGINE)),
        eval_episodes=int(run.get("eval_episodes", 10)),
        common_preset=common,
        timing=bool(run.get("timing", False)),
        scenario=scenario,
        methods=methods,
        blocks=blocks,
    )


# -- what a cell needs ---------------------------------------------------------------------------
def _module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_requirements(cell: Cell) -> list[str]:
    """Why this process could not run the cell ([] when it can)."""
    from .scheduling import SchedulerError, resolve_scheduler

    problems = []
    try:
        resolve_scheduler(cell.scheduler)
    except SchedulerError as err:
        problems.append(str(err))
    except ImportError as err:
        problems.append(f"scheduler {cell.scheduler!r} cannot be imported: {err}")
    if cell.learner and not _module_available("mecsim.training"):
        problems.append("learner cells need mecsim.training (train), which is not installed")
    if cell.scenario.model == "event" and not _module_available("mecsim.event_model"):
        problems.append("the event model needs mecsim.event_model, which is not installed")
    if cell.engine != DEFAULT_ENGINE:
        if not _module_available("mecsim.kernel"):
            problems.append(f"engine {cell.engine!r} needs the compiled kernel mecsim.kernel, which is not installed")
        else:
            try:
                _engine_kwargs(_cell_function(cell.learner), cell.engine)
            except SweepError as err:
                problems.append(str(err))
    return problems


def plan(experiment: Experiment, echo: Callable[[str], None] = print) -> list[Cell]:
    """The experiment's cells, leaving out optional methods/blocks whose modules are missing.

    Raises `SweepError` naming the missing module when a required cell cannot run.
    """
    skip_methods: set[str] = set()
    skip_blocks: set[int] = set()
    cells = experiment.cells()
    checked: dict[tuple, list[str]] = {}
    required_problems: dict[str, set[str]] = {}
    for cell in cells:
        key = (cell.scheduler, cell.learner, cell.scenario.model, cell.engine)
        if key not in checked:
            checked[key] = missing_requirements(cell)
        problems = checked[key]
        if not problems:
            continue
        method = experiment.methods[cell.method]
        if method.optional:
            skip_methods.add(method.name)
        elif all(experiment.blocks[i].optional for i in cell.blocks):
            skip_blocks.update(cell.blocks)
        else:
            required_problems.setdefault("; ".join(problems), set()).add(f"{cell.method} [{cell.scenario.model}]")
    if required_problems:
        lines = [f"{why} (needed by {', '.join(sorted(who))})" for why, who in required_problems.items()]
        raise SweepError(f"experiment {experiment.name!r} cannot run here:\n  " + "\n  ".join(lines))
    if skip_methods or skip_blocks:
        what = [f"method {m}" for m in sorted(skip_methods)]
        what += [f"sweep block #{i + 1} ({experiment.blocks[i].name}, {'/'.join(experiment.blocks[i].models)})"
                 for i in sorted(skip_blocks)]
        echo(f"leaving out optional {', '.join(what)}: not available in this installation")
        cells = experiment.cells(skip_methods, skip_blocks)
    return cells


# -- the worker side -----------------------------------------------------------------------------
def _limit_threads() -> None:
    """One BLAS/XLA thread per worker (effective only before numpy's BLAS / jax initialise)."""
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)


def _log_event(run_id: str, cell_id: str, event: str, **extra: Any) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(EVENT_TOPIC, {"run": run_id, "cell": cell_id, "event": event,
                                             "where": f"{socket.gethostname()}:{os.getpid()}", **extra})
    except (ImportError, ValueError):
        pass  # not on a Dask worker


def compute_cell(payload: dict[str, Any]) -> pd.DataFrame:
    """Run one cell: heuristic with `mecsim.runner.run`, learner with `mecsim.training.train`; its rows."""
    _limit_threads()
    return _compute(payload)


def compute_batch(payloads: list[dict[str, Any]]) -> list[pd.DataFrame]:
    """Run cells that `plan_batches` put together: on the kernel in shared compiled calls
    (`mecsim.training.train_many`, `mecsim.runner.run_many`); each cell's rows equal its own run's up
    to the last bit of rounding."""
    _limit_threads()
    if len(payloads) == 1:
        return [_compute(payloads[0])]
    first = payloads[0]
    scenarios = [Scenario(**p["scenario"]) for p in payloads]
    if first["learner"]:
        from .training import train_many

        results = train_many(scenarios, first["scheduler"], first["episodes"], eval_episodes=first["eval_episodes"],
                             options=first["options"], timing=first["timing"], engine=first["engine"])
        frames = [r.episodes for r in results]
    else:
        from .runner import run_many

        frames = run_many(scenarios, first["scheduler"], first["episodes"], scheduler_options=first["options"],
                          timing=first["timing"], engine=first["engine"])
    return [_decorate(frame, p) for frame, p in zip(frames, payloads)]


def _attempt(batch_fn: Callable[[list[dict[str, Any]]], list[pd.DataFrame]], payloads: list[dict[str, Any]], run_id: str):
    """One attempt at a batch of cells on a worker: logs start/error events (for the retry report), times it."""
    _limit_threads()
    for payload in payloads:
        _log_event(run_id, payload["cell_id"], "start")
    started = time.perf_counter()
    try:
        frames = batch_fn(payloads)
    except BaseException as err:
        for payload in payloads:
            _log_event(run_id, payload["cell_id"], "error", error=f"{type(err).__name__}: {err}")
        raise
    info = {"wall_s": time.perf_counter() - started, "where": f"{socket.gethostname()}:{os.getpid()}"}
    return frames, info


def _cell_function(learner: bool) -> Callable:
    if learner:
        try:
            return importlib.import_module("mecsim.training").train
        except ImportError as err:
            raise SweepError(f"learner cells need mecsim.training: {err}") from None
    from .runner import run

    return run


def _engine_kwargs(function: Callable, engine: str) -> dict[str, Any]:
    """``engine=`` when the function takes it (always passed, so a cell's engine is what runs);
    nothing for the default engine when it does not (an older version: Python only)."""
    import inspect

    if "engine" in inspect.signature(function).parameters:
        return {"engine": engine}
    if engine == DEFAULT_ENGINE:
        return {}
    raise SweepError(
        f"engine {engine!r}: {function.__module__}.{function.__name__} takes no engine argument in this version"
    )


def _compute(payload: dict[str, Any]) -> pd.DataFrame:
    scenario = Scenario(**payload["scenario"])
    engine = payload["engine"]
    if engine != DEFAULT_ENGINE and not _module_available("mecsim.kernel"):
        raise SweepError(f"engine {engine!r} needs mecsim.kernel, which is not installed on this worker")
    function = _cell_function(payload["learner"])
    if payload["learner"]:
        result = function(
            scenario,
            payload["scheduler"],
            payload["episodes"],
            eval_episodes=payload["eval_episodes"],
            options=payload["options"],
            progress=False,
            timing=payload["timing"],
            **_engine_kwargs(function, engine),
        )
        frame = result.episodes
    else:
        frame, _ = function(
            scenario,
            payload["scheduler"],
            payload["episodes"],
            scheduler_options=payload["options"],
            progress=False,
            timing=payload["timing"],
            **_engine_kwargs(function, engine),
        )
    return _decorate(frame, payload)


def _decorate(frame: pd.DataFrame, payload: dict[str, Any]) -> pd.DataFrame:
    """The cell's identity columns in front of the runner's table."""
    engine = payload["engine"]
    frame = frame.copy()
    frame["scheduler_options"] = json.dumps(payload["options"], sort_keys=True, default=str)
    frame.insert(0, "episodes_planned", payload["episodes"])
    frame.insert(0, "engine", engine)
    frame.insert(0, "method_kind", "learner" if payload["learner"] else "heuristic")
    frame.insert(0, "method", payload["method"])
    frame.insert(0, "cell_id", payload["cell_id"])
    return frame


def label(frame: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    """Put the experiment/sweep label columns in front (they are the only part that may change later)."""
    frame = frame.drop(columns=[c for c in LABEL_COLUMNS if c in frame.columns])
    n = len(frame)
    front = pd.DataFrame(
        {
            "experiment": [cell.experiment] * n,
            "sweep": [cell.sweep] * n,
            "swept_value": [float(cell.swept_value)] * n,
            "sweeps": [cell.sweeps for _ in range(n)],
        },
        index=frame.index,
    )
    return pd.concat([front, frame], axis=1)


# -- planning ------------------------------------------------------------------------------------
def expected_tasks(scenario: Scenario) -> float:
    """Expected tasks per episode (decision slots × BSs × task slots × arrival probability)."""
    return scenario.decision_slots * scenario.n_bs * scenario.tasks_per_slot * scenario.arrival_prob


def calibration(results_dir: str | Path) -> pd.DataFrame:
    """Measured seconds per (episode × expected task), per method, model and engine, from every timings.csv."""
    frames = [pd.read_csv(p) for p in Path(results_dir).glob("*/timings.csv")]
    if not frames:
        return pd.DataFrame(columns=["method", "model", "engine", "s_per_task_episode", "cells"])
    t = pd.concat(frames, ignore_index=True)
    t = t[t["expected_tasks_per_episode"] > 0]
    t["rate"] = t["wall_s"] / (t["episodes"] * t["expected_tasks_per_episode"])
    return (
        t.groupby(["method", "model", "engine"])["rate"]
        .agg(s_per_task_episode="median", cells="size")
        .reset_index()
    )


def estimate(cells: list[Cell], rates: pd.DataFrame) -> tuple[float, list[Cell]]:
    """Projected CPU seconds of ``cells`` (cost ∝ episodes × expected tasks), and the cells with no measurement."""
    table = {(r.method, r.model, r.engine): r.s_per_task_episode for r in rates.itertuples()}
    total, unknown = 0.0, []
    for cell in cells:
        rate = table.get((cell.method, cell.scenario.model, cell.engine))
        if rate is None:
            unknown.append(cell)
            continue
        episodes = cell.episodes + (cell.eval_episodes if cell.learner else 0)
        total += rate * episodes * expected_tasks(cell.scenario)
    return total, unknown


# Cells on the compiled kernel that differ only in seed, capacities, deadline, arrival probability,
# tasks per BS or the other per-replica numbers share compiled calls. A batch holds cells of similar
# scan length (padding to the busiest replica is wasted work), and few enough for the workers to
# share the load.
BATCH_CELLS = 24
BATCH_SPREAD = 1.15  # largest / smallest expected scan length within one batch


def scan_length(cell: Cell) -> float:
    """The kernel's expected scan length for the cell: tasks per slot for learners (their kernel
    steps slot by slot, padded to the busiest slot), tasks per episode otherwise."""
    from .kernel import expected_length

    return expected_length(cell.scenario, "nested" if cell.learner else "flat")


def batch_key(cell: Cell) -> tuple | None:
    """Cells with equal keys may share kernel calls (`plan_batches`); None: the cell runs alone."""
    if cell.engine == DEFAULT_ENGINE or cell.scenario.model != "slotted" or not _module_available("mecsim.kernel"):
        return None
    from dataclasses import replace

    from .kernel import Spec  # the kernel's static shape; N may differ (padded to the batch's largest)

    options = json.dumps(cell.options, sort_keys=True, default=str)
    eval_episodes = cell.eval_episodes if cell.learner else 0
    return (cell.method, cell.scheduler, cell.learner, cell.episodes, eval_episodes, options, cell.engine, cell.timing,
            replace(Spec.from_scenario(cell.scenario), tasks_per_slot=0))


def plan_batches(cells: list[Cell], max_cells: int = BATCH_CELLS, spread: float = BATCH_SPREAD) -> list[list[Cell]]:
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
        current: list[Cell] = []
        for cell in members:
            if current and (len(current) >= max_cells or scan_length(cell) > spread * max(scan_length(current[0]), 1.0)):
                batches.append(current)
                current = []
            current.append(cell)
        batches.append(current)
    return batches


def _each(cell_fn: Callable[[dict[str, Any]], pd.DataFrame], payloads: list[dict[str, Any]]) -> list[pd.DataFrame]:
    return [cell_fn(p) for p in payloads]


def describe_plan(experiment: str | Path | Experiment, results_dir: str | Path = "results",
                  workers: int | None = None, echo: Callable[[str], None] = print) -> None:
    """Print what a sweep would run and a projected wall time from the measured per-cell costs."""
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    cells = plan(exp, echo)
    out_dir = Path(results_dir) / exp.name
    done = finished_cells(out_dir) if out_dir.is_dir() else set()
    todo = [c for c in cells if c.cell_id not in done]
    echo(f"experiment {exp.name} ({exp.path}): {len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run")
    counts = pd.DataFrame(
        [{"sweep": c.sweep, "method": c.method, "model": c.scenario.model} for c in todo],
        columns=["sweep", "method", "model"],
    )
    if not counts.empty:
        echo(counts.value_counts(["sweep", "model"]).sort_index().to_string())
    rates = calibration(results_dir)
    seconds, unknown = estimate(todo, rates)
    n = workers or default_workers()
    echo(f"projected: {seconds / 3600:.1f} CPU-hours, about {seconds / n / 3600:.1f} h on {n} worker(s) "
         f"(from {int(rates['cells'].sum()) if len(rates) else 0} measured cells in {results_dir}/*/timings.csv; "
         f"cost taken as proportional to episodes x expected tasks)")
    if unknown:
        kinds = sorted({f"{c.method}/{c.scenario.model}/{c.engine}" for c in unknown})
        echo(f"not included: {len(unknown)} cells with no measurement yet ({', '.join(kinds)})")


# -- the client side -----------------------------------------------------------------------------
@dataclass
class SweepReport:
    experiment: str
    out_dir: Path
    total: int
    skipped: int  # already finished before this run
    computed: list[str] = field(default_factory=list)  # cell ids finished in this run
    relabelled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> error with traceback
    retried: dict[str, int] = field(default_factory=dict)  # cell id -> attempts, when more than one
    stale: list[str] = field(default_factory=list)  # parts in the directory that the experiment no longer defines
    removed_temp: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def part_path(out_dir: Path, cell_id: str) -> Path:
    return out_dir / f"part-{cell_id}.parquet"


def finished_cells(out_dir: Path) -> set[str]:
    return {p.stem.removeprefix("part-") for p in out_dir.glob("part-*.parquet")}


def remove_temp_files(out_dir: Path) -> list[str]:
    """Delete leftovers of interrupted atomic writes (``.part-*.tmp``); they are never valid data."""
    removed = []
    for tmp in out_dir.glob(".part-*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    return removed


@contextlib.contextmanager
def _directory_lock(out_dir: Path) -> Iterator[None]:
    import fcntl

    with open(out_dir / ".sweep.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f"another sweep is writing {out_dir}; wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def dask_client(scheduler_address: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A `distributed.Client`: joined to ``scheduler_address`` (or $MECSIM_DASK_ADDRESS), else a LocalCluster."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    address = scheduler_address or os.environ.get(ADDRESS_ENV)
    if address:
        with Client(address) as client:
            yield client
        return
    n = workers or default_workers()
    worker_env = worker_environment()
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **worker_env}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        with LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            env=worker_env,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # failures reach the client through the futures
        ) as cluster, Client(cluster) as client:
            yield client


def relabel_parts(cells: list[Cell], out_dir: Path) -> tuple[list[str], set[str]]:
    """Rewrite the label columns of finished parts whose sweep membership changed in the definition.

    Returns the relabelled cell ids and the git commits the finished parts were computed at.
    """
    from .results import write_parquet

    changed, commits = [], set()
    for cell in cells:
        path = part_path(out_dir, cell.cell_id)
        if not path.exists():
            continue
        labels = pd.read_parquet(path, columns=[*LABEL_COLUMNS, "git_commit"])
        commits.update(labels["git_commit"].unique().tolist())
        first = labels.iloc[0] if len(labels) else None
        same = (
            first is not None
            and first["experiment"] == cell.experiment
            and first["sweep"] == cell.sweep
            and (first["swept_value"] == cell.swept_value or (math.isnan(first["swept_value"]) and math.isnan(cell.swept_value)))
            and list(first["sweeps"]) == cell.sweeps
        )
        if not same:
            write_parquet(label(pd.read_parquet(path), cell), path)
            changed.append(cell.cell_id)
    return changed, commits


def _append_timing(out_dir: Path, cell: Cell, info: dict[str, Any]) -> None:
    path = out_dir / "timings.csv"
    s = cell.scenario
    row = {
        "cell_id": cell.cell_id,
        "method": cell.method,
        "method_kind": "learner" if cell.learner else "heuristic",
        "model": s.model,
        "preset": s.preset,
        "engine": cell.engine,
        "seed": s.seed,
        "sweep": cell.sweep,
        "swept_value": cell.swept_value,
        "episodes": cell.episodes + (cell.eval_episodes if cell.learner else 0),
        "expected_tasks_per_episode": expected_tasks(s),
        "wall_s": round(info["wall_s"], 3),
        "where": info["where"],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    header = not path.exists()
    pd.DataFrame([row]).to_csv(path, mode="a", header=header, index=False)


def run_sweep(
    experiment: str | Path | Experiment,
    *,
    results_dir: str | Path = "results",
    rerun: bool = False,
    scheduler_address: str | None = None,
    workers: int | None = None,
    client: Any = None,
    progress: bool | None = None,
    retries: int = 2,
    cell_fn: Callable[[dict[str, Any]], pd.DataFrame] | None = None,
    echo: Callable[[str], None] = print,
) -> SweepReport:
    """Run every unfinished cell of ``experiment``; write ``results_dir/<name>/part-<cell_id>.parquet``.

    ``client``: an existing `distributed.Client` to use (otherwise one is made by `dask_client`).
    Cells run in the batches of `plan_batches` through `compute_batch`; with ``cell_fn(payload)
    -> rows`` given, each cell runs alone through it instead. A batch that fails is retried
    ``retries`` times, then its cells are reported in the returned `SweepReport`.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    from .results import write_parquet

    started = time.perf_counter()
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    cells = plan(exp, echo)
    out_dir = Path(results_dir) / exp.name
    out_dir.mkdir(parents=True, exist_ok=True)
    with _directory_lock(out_dir):
        report = SweepReport(exp.name, out_dir, total=len(cells), skipped=0)
        report.removed_temp = remove_temp_files(out_dir)
        done = set() if rerun else finished_cells(out_dir)
        ids = {c.cell_id for c in cells}
        report.stale = sorted(finished_cells(out_dir) - ids)
        todo = [c for c in cells if c.cell_id not in done]
        report.skipped = len(cells) - len(todo)
        if not rerun:
            report.relabelled, commits = relabel_parts([c for c in cells if c.cell_id in done], out_dir)
            from .runner import git_commit

            other = sorted(commits - {git_commit()})
            if other:
                echo(f"note: finished parts were computed at other commit(s) {', '.join(c[:10] for c in other)}; "
                     f"the git_commit column says which; --rerun recomputes everything at this commit")
        echo(
            f"sweep {exp.name}: {len(cells)} cells, {report.skipped} already finished, {len(todo)} to run -> {out_dir}"
            + (f" (removed {len(report.removed_temp)} temporary file(s) of an interrupted write)" if report.removed_temp else "")
        )
        if report.stale:
            echo(f"note: {len(report.stale)} part(s) in {out_dir} belong to no cell of the current definition; "
                 f"`mecsim plot` ignores them")
        if todo:
            if cell_fn is None:
                batch_fn: Callable = compute_batch
                todo_ids = {c.cell_id for c in todo}
                batches = [b for b in plan_batches(cells) if any(c.cell_id in todo_ids for c in b)]
            else:
                batch_fn = functools.partial(_each, cell_fn)
                batches = [[c] for c in todo]
            cost = lambda batch: sum(c.cost() for c in batch)  # noqa: E731
            batches.sort(key=cost, reverse=True)  # longest first: shortest overall wall time
            run_id = uuid.uuid4().hex
            with contextlib.ExitStack() as stack:
                if client is None:
                    if workers and (scheduler_address or os.environ.get(ADDRESS_ENV)):
                        echo("note: --workers applies to the local cluster only; the remote cluster keeps its workers")
                    client = stack.enter_context(dask_client(scheduler_address, workers))
                by_key = {}
                for batch in batches:
                    future = client.submit(
                        _attempt,
                        batch_fn,
                        [c.payload() for c in batch],
                        run_id,
                        key=f"mecsim-cell-{batch[0].cell_id}-{run_id[:8]}",
                        pure=False,
                        retries=retries,
                        priority=int(1000 * cost(batch)),
                    )
                    by_key[future.key] = (future, batch)
                total_cost = sum(cost(b) for b in batches)
                done_cost = 0.0
                bar = tqdm(total=len(todo), unit="cell", desc=f"sweep {exp.name}", dynamic_ncols=True,
                           disable=None if progress is None else not progress, file=sys.stderr)
                pending = as_completed([f for f, _ in by_key.values()])
                try:
                    for future in pending:
                        batch = by_key[future.key][1]
                        if future.status == "lost":
                            # finished, but the worker holding the result died before we fetched it:
                            # the scheduler computes it again (bounded by its allowed-failures)
                            pending.add(future)
                            continue
                        if future.status == "finished":
                            frames, info = future.result()
                            batch_cost = cost(batch)
                            for cell, frame in zip(batch, frames):
                                if cell.cell_id in done:
                                    continue  # a resumed batch: this cell's part is already there
                                write_parquet(label(frame, cell), part_path(out_dir, cell.cell_id))
                                share = {**info, "wall_s": info["wall_s"] * cell.cost() / batch_cost}
                                _append_timing(out_dir, cell, share)
                                report.computed.append(cell.cell_id)
                        else:
                            err = future.exception() if future.status == "error" else None
                            if err is None:
                                err = RuntimeError(f"the task ended with status {future.status!r}")
                            tb = "".join(traceback.format_tb(future.traceback())) if future.traceback() else ""
                            for cell in batch:
                                report.failed[cell.cell_id] = f"{cell.describe()}: {type(err).__name__}: {err}\n{tb}"
                            others = f" (and {len(batch) - 1} other cell(s) of its batch)" if len(batch) > 1 else ""
                            bar.write(f"cell failed: {batch[0].describe()}{others}: {type(err).__name__}: {err}")
                        future.release()
                        done_cost += cost(batch)
                        elapsed = time.perf_counter() - started
                        eta = elapsed * (total_cost - done_cost) / done_cost if done_cost else float("nan")
                        bar.set_postfix(failed=len(report.failed), work_eta=_fmt_s(eta), refresh=False)
                        bar.update(sum(c.cell_id not in done for c in batch))
                except KeyboardInterrupt:
                    bar.close()
                    echo(f"\ninterrupted: {len(report.computed)} cell(s) of this run are saved; "
                         f"run the same command again to finish the remaining {len(todo) - len(report.computed)}")
                    raise
                finally:
                    bar.close()
                    report.retried = _attempts(client, run_id, {b[0].cell_id: [c.cell_id for c in b] for _, b in by_key.values()})
    report.wall_s = time.perf_counter() - started
    _summarise(report, echo)
    return report


def _attempts(client: Any, run_id: str, batches: dict[str, list[str]]) -> dict[str, int]:
    """Cells started more than once in this run: an error and a retry, or a lost worker and a recomputation.

    ``batches``: the cell ids of each batch, by the id of its first cell (which names its task).
    """
    starts: dict[str, int] = {}
    lost: dict[str, int] = {}
    try:
        for _, msg in client.get_events(EVENT_TOPIC):
            if isinstance(msg, dict) and msg.get("run") == run_id and msg.get("event") == "start":
                starts[msg["cell"]] = starts.get(msg["cell"], 0) + 1
        # a worker killed mid-cell may not have sent its start event: count the scheduler's view too
        for _, msg in client.get_events("all"):
            if not (isinstance(msg, dict) and msg.get("action") == "remove-worker"):
                continue
            for key in [*msg.get("processing-tasks", ()), *msg.get("lost-computed-tasks", ())]:
                key = str(key)
                if key.startswith("mecsim-cell-") and key.endswith(f"-{run_id[:8]}"):
                    for cell in batches.get(key.split("-")[2], [key.split("-")[2]]):
                        lost[cell] = lost.get(cell, 0) + 1
    except Exception:  # noqa: BLE001 - reporting only
        pass
    attempts = {cell: max(starts.get(cell, 0), 1 + lost.get(cell, 0)) for cell in {*starts, *lost}}
    return {cell: n for cell, n in attempts.items() if n > 1}


def _fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _summarise(report: SweepReport, echo: Callable[[str], None]) -> None:
    echo(
        f"sweep {report.experiment}: {len(report.computed)} computed, {report.skipped} already finished, "
        f"{len(report.failed)} failed of {report.total} cells in {report.wall_s:.1f} s"
    )
    if report.relabelled:
        echo(f"updated the sweep labels of {len(report.relabelled)} finished part(s)")
    for cell_id, attempts in sorted(report.retried.items()):
        status = "failed" if cell_id in report.failed else "succeeded"
        echo(f"retried: cell {cell_id} ran {attempts} times (worker lost or error) and {status}")
    for cell_id, error in report.failed.items():
        echo(f"FAILED {error.rstrip()}")
