"""The experiment file (TOML) as a validated schema, and where experiment names are found.

An experiment file has these tables (unknown keys are errors):

``name``, ``description``
    results go to ``results/<name>/`` (default: the file name without ``.toml``).
``extends``
    another experiment (a name or a path relative to this file) whose tables this one
    starts from: ``[run]``, ``[scenario]`` and ``[methods.<name>]`` are merged key by key
    (this file wins), the ``[[sweep]]`` blocks are this file's when it has any, else the
    parent's.
``[run]`` (`RunTable`)
    seeds, engine, eval_episodes, common_preset, timing.
``[scenario]``
    the default point: any scenario field, nested or dotted, as printed by ``mecsim config``.
``[methods.<name>]`` (`MethodTable`)
    one table per method: episodes, learner, preset, scheduler, engine, options, optional.
``[[sweep]]`` (`SweepBlock`)
    a block of cells: name, parameter, values, x, methods, presets, models, set, optional.

A cell is scenario (seed included) × method × engine; its id is the hash of its canonical
JSON. A cell listed by several blocks (the default point lies on every sweep) is computed
once; the dataset's ``sweep``/``swept_value`` columns name its first block and ``sweeps``
lists all of them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..backends import DEFAULT_ENGINE
from ..config import DelayModel, PresetName


class SweepError(RuntimeError):
    """An experiment file is invalid, a scheduler a cell needs is missing, or cells failed."""


SWEEP_LABELS = ("default", "deadline", "arrival_prob", "tasks_per_slot", "capacity", "convergence")
EngineName = Literal["auto", "python", "compiled"]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class RunTable(_Table):
    seeds: list[int] = Field([0], min_length=1)
    """distinct integer seeds >= 0; every cell runs once per seed"""
    engine: EngineName = DEFAULT_ENGINE
    """`mecsim.backends`: "auto" (the kernel where it applies), "python" (SimPy) or "compiled"; part of
    every cell's identity"""
    eval_episodes: int = Field(10, ge=0)
    """greedy evaluation episodes after a learner's online training (rows with phase "eval")"""
    common_preset: PresetName = "amcoedge"
    """the environment preset that all methods share in "common" cells (fair comparison)"""
    timing: bool = False
    """true: per-episode wall time in every row; false: the dataset is byte-reproducible (per-cell wall
    times always go to results/<name>/timings.csv)"""

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"need a list of distinct integers >= 0, got {seeds}")
        return seeds


class MethodTable(_Table):
    episodes: int = Field(ge=1)
    """online episodes (learners: training episodes, the paper's curve)"""
    learner: bool = False
    """true: run with mecsim.training.train (online curve + greedy evaluation); false: mecsim.runner.run"""
    preset: PresetName | None = None
    """the method's own published environment preset (omit if it has none)"""
    scheduler: str | None = None
    """registered scheduler name (default: the method name)"""
    engine: EngineName | None = None
    """overrides [run] engine for this method"""
    options: dict[str, Any] = {}
    """scheduler options, e.g. { lr = 0.001 }"""
    optional: bool = False
    """true: left out, with a note, when its scheduler is not installed"""


class SweepBlock(_Table):
    name: str = Field(min_length=1)
    """written to the `sweep` column: default, deadline, arrival_prob, tasks_per_slot, capacity, convergence, ..."""
    parameter: str | None = None
    """scenario field to vary (dotted for variant flags); omit for a single point"""
    values: list[Any] | None = None
    """the parameter's values"""
    x: list[float] | None = None
    """the plotted value of each entry of `values` (needed when values are not numbers)"""
    methods: Literal["all"] | list[str] = "all"
    """method names, or "all\""""
    presets: list[str] = ["common"]
    """any of "common", "own" (the method's `preset`; methods without one are left out) or a preset name"""
    models: list[DelayModel] | None = None
    """delay models; default: the scenario's model"""
    set: dict[str, Any] = {}
    """extra scenario fields fixed for this block only, e.g. { slots = 21 }"""
    optional: bool = False
    """true: the block is left out, with a note, when a scheduler it needs is missing"""

    @model_validator(mode="after")
    def _values(self) -> SweepBlock:
        if self.parameter is None:
            if self.values is not None:
                raise ValueError("values given without a parameter")
            return self
        if not self.values:
            raise ValueError(f"parameter {self.parameter!r} needs a non-empty values list")
        x = self.x if self.x is not None else self.values
        if len(x) != len(self.values) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in x
        ):
            raise ValueError(
                "x must give one number per value (values are not all numbers, e.g. capacity vectors, "
                "so give x)"
            )
        return self

    def points(self) -> list[tuple[Any, float]]:
        """(value, plotted x) of every point of the block; (None, nan) for a single point."""
        if self.parameter is None:
            return [(None, float("nan"))]
        x = self.x if self.x is not None else self.values
        return [(v, float(p)) for v, p in zip(self.values, x)]


class ExperimentFile(_Table):
    name: str | None = None
    description: str = ""
    extends: str | None = None
    run: RunTable = RunTable()
    scenario: dict[str, Any] = {}
    methods: dict[str, MethodTable] = Field(min_length=1)
    sweep: list[SweepBlock] = Field(min_length=1)


# -- finding and reading files -----------------------------------------------------------------
def experiments_dirs() -> list[Path]:
    """Where experiment names are looked up: ./experiments, then the source tree's experiments/."""
    dirs = [Path.cwd() / "experiments", Path(__file__).resolve().parents[2] / "experiments"]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def find_experiment(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A TOML path as given (or relative to ``relative_to``), or ``<name>.toml`` in `experiments_dirs`."""
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute() and (relative_to / path).exists():
        path = relative_to / path
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SweepError(f"experiment file {path} does not exist")
        return path
    dirs = ([relative_to] if relative_to is not None else []) + experiments_dirs()
    for directory in dirs:
        candidate = directory / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in experiments_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise SweepError(
        f"no experiment {str(name_or_path)!r}; known: {', '.join(known) or 'none'} (or give a .toml path)"
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{path}: not valid TOML: {err}") from None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def read_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's tables with its ``extends`` chain resolved (this file's keys win)."""
    data = _read(path)
    parent_name = data.get("extends")
    if parent_name is None:
        return data
    if not isinstance(parent_name, str):
        raise SweepError(f"{path}: extends = {parent_name!r}: give an experiment name or a .toml path")
    parent_path = find_experiment(parent_name, relative_to=path.parent).resolve()
    if parent_path in (*_seen, path.resolve()):
        raise SweepError(f"{path}: extends {parent_name!r}, which extends it back")
    parent = read_file(parent_path, (*_seen, path.resolve()))
    merged = {key: parent[key] for key in ("run", "scenario", "methods", "sweep") if key in parent}
    merged = _merge(merged, {k: v for k, v in data.items() if k != "sweep"})
    if "sweep" in data:
        merged["sweep"] = data["sweep"]
    return merged


def validate(path: Path, data: dict[str, Any]) -> ExperimentFile:
    try:
        return ExperimentFile.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = _where(e["loc"])
            if e["type"] == "extra_forbidden":
                lines.append(f"{where}: unknown key (value {e.get('input')!r})")
            elif e["type"] == "missing":
                lines.append(f"{where}: required")
            else:
                lines.append(f"{where} = {e.get('input')!r}: {e['msg'].removeprefix('Value error, ')}")
        raise SweepError(f"{path}: invalid experiment file:\n  " + "\n  ".join(lines)) from None


def _where(loc: tuple) -> str:
    """A TOML-like location: [run] seeds, [methods.x] bogus, [[sweep]] #2 values."""
    if not loc:
        return "top level"
    head, *rest = loc
    if head == "methods" and rest:
        return f"[methods.{rest[0]}]" + (f" {'.'.join(map(str, rest[1:]))}" if rest[1:] else "")
    if head == "sweep" and rest and isinstance(rest[0], int):
        return f"[[sweep]] #{rest[0] + 1}" + (f" {'.'.join(map(str, rest[1:]))}" if rest[1:] else "")
    if head in ("run", "scenario") and rest:
        return f"[{head}] {'.'.join(map(str, rest))}"
    return ".".join(map(str, loc))
