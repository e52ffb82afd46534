"""An experiment's cells: the grid of each ``[[sweep]]`` block as a product of its factors.

A *cell* is one fully specified run: scenario (seed included) × method × engine, with its
episode counts and options. Its identity is the SHA-256 of its canonical JSON
(`Cell.identity`), so the same cell has the same id in every process and on every
machine, and any change to what it computes gives a new id. The labels saying which
sweep blocks a cell belongs to are *not* part of the identity: the default point lies
on every sweep and is computed once.

>>> exp = load_experiment("quick")
>>> cells = exp.cells()
>>> len({c.cell_id for c in cells}) == len(cells)
True
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import PRESETS, ConfigError, Scenario, build_scenario
from .schema import ExperimentFile, MethodTable, SweepBlock, SweepError, find_experiment, read_file, validate


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
    """A validated experiment file (`schema.ExperimentFile`): its tables, its name and its path."""

    name: str
    description: str
    path: Path
    seeds: list[int]
    engine: str
    eval_episodes: int
    common_preset: str
    timing: bool
    scenario: dict[str, Any]
    methods: dict[str, MethodTable]
    blocks: list[SweepBlock]

    @classmethod
    def from_file(cls, path: Path, spec: ExperimentFile) -> Experiment:
        run = spec.run
        return cls(
            spec.name or path.stem,
            spec.description,
            path,
            run.seeds,
            run.engine,
            run.eval_episodes,
            run.common_preset,
            run.timing,
            spec.scenario,
            spec.methods,
            spec.sweep,
        )

    def block_methods(self, block: SweepBlock) -> list[str]:
        return list(self.methods) if block.methods == "all" else list(block.methods)

    def resolve_preset(self, preset: str, method: MethodTable) -> str | None:
        if preset == "common":
            return self.common_preset
        if preset == "own":
            return method.preset
        return preset

    def cells(self, skip_methods: set[str] = frozenset(), skip_blocks: set[int] = frozenset()) -> list[Cell]:
        """Every cell, in definition order, each once; leaves out the named methods and block indices.

        A block's cells are the product of its points, models, methods, presets and the seeds.
        """
        cells: dict[str, Cell] = {}
        for index, block in enumerate(self.blocks):
            if index in skip_blocks:
                continue
            models = block.models or [self.scenario.get("model", "slotted")]
            methods = [m for m in self.block_methods(block) if m not in skip_methods]
            for (value, x), model, name, preset_spec, seed in itertools.product(
                block.points(), models, methods, block.presets, self.seeds
            ):
                method = self.methods[name]
                preset = self.resolve_preset(preset_spec, method)
                if preset is None:
                    continue  # "own" for a method without a published preset
                overrides = dict(block.set)
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
                    method=name,
                    scheduler=method.scheduler or name,
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


def load_experiment(name_or_path: str | Path) -> Experiment:
    """Read and check an experiment file (schema: `mecsim.sweep.schema`), its ``extends`` chain resolved."""
    path = find_experiment(name_or_path)
    spec = validate(path, read_file(path))
    try:
        build_scenario(spec.scenario)
    except ConfigError as err:
        raise SweepError(f"{path}: [scenario]: {err}") from None
    for block in spec.sweep:
        missing = [
            m for m in (spec.methods if block.methods == "all" else block.methods) if m not in spec.methods
        ]
        if missing:
            raise SweepError(
                f"{path}: sweep {block.name!r}: unknown method(s) {', '.join(missing)}; defined: {', '.join(spec.methods)}"
            )
        bad = [p for p in block.presets if p not in ("common", "own") and p not in PRESETS]
        if bad:
            raise SweepError(
                f"{path}: sweep {block.name!r}: presets {bad}: use common, own or a preset name "
                f"({', '.join(PRESETS)})"
            )
    return Experiment.from_file(path, spec)
