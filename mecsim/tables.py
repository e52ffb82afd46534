"""Tidy result rows: one row per (run, episode, phase) with every scenario field and the provenance."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import Scenario
from .version import __version__


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


def episode_row(
    scenario: Scenario, scheduler: str, episode: int, phase: str, metrics: dict, wall_time: float | None
) -> dict[str, Any]:
    """One row of the per-episode table: identity, metrics, wall time, every scenario field, provenance."""
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
