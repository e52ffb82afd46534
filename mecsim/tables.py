"""Tidy result rows: one row per (run, episode, phase) with every scenario field and the provenance."""

from __future__ import annotations

import hashlib
import json
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


def config_hash(scenario: Scenario, options: dict[str, Any] | None = None) -> str:
    """The experiment point's hash: every scenario field but the seed, and the scheduler's options.

    Runs without options keep the scenario's own hash (`Scenario.config_hash`).
    """
    if not options:
        return scenario.config_hash()
    payload = {"scenario": scenario.model_dump(mode="json", exclude={"seed"}), "scheduler_options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def provenance(
    scenario: Scenario,
    options: dict[str, Any] | None = None,
    engine: str = "python",
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Where a row comes from: package version, commit, the point's hash, the engine that ran, the
    scheduler's options and the checkpoint it started from."""
    return {
        "mecsim_version": __version__,
        "git_commit": git_commit(),
        "config_hash": config_hash(scenario, options),
        "engine_used": engine,
        "scheduler_options": json.dumps(options or {}, sort_keys=True, default=str),
        "checkpoint": "" if checkpoint is None else str(checkpoint),
    }


def episode_row(
    scenario: Scenario,
    scheduler: str,
    episode: int,
    phase: str,
    metrics: dict,
    wall_time: float | None,
    source: dict[str, Any],
) -> dict[str, Any]:
    """One row of the per-episode table: identity, metrics, wall time, every scenario field, and its
    ``source`` (`provenance`)."""
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
    row.update(source)
    return row
