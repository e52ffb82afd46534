"""The parts store: one parquet part per finished cell under ``results/<experiment>/``.

Each part is written atomically (`mecsim.results.write_atomic`), so an interrupted sweep
resumes by skipping finished cells; temporary files of an interrupted write are removed at
the next start. A directory lock keeps two sweeps from writing the same directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ..results import TEMP_SUFFIX, write_parquet
from .cells import Cell
from .planning import expected_tasks
from .schema import SweepError
from .worker import LABEL_COLUMNS


def part_path(out_dir: Path, cell_id: str) -> Path:
    return out_dir / f"part-{cell_id}.parquet"


CORRUPT_SUFFIX = ".corrupt"


def finished_cells(out_dir: Path) -> set[str]:
    """Cell ids with a part in ``out_dir`` (whether readable or not: see `set_aside_corrupt_parts`)."""
    return {p.stem.removeprefix("part-") for p in out_dir.glob("part-*.parquet")}


def corrupt_parts(out_dir: Path) -> list[Path]:
    """Parts that are not readable parquet (a disk fault, a copy cut short): their footers do not parse."""
    import pyarrow.parquet as pq

    bad = []
    for path in sorted(out_dir.glob("part-*.parquet")):
        try:
            pq.read_metadata(path)
        except Exception:  # noqa: BLE001 - any failure to parse means the part cannot be used
            bad.append(path)
    return bad


def set_aside_corrupt_parts(out_dir: Path) -> list[Path]:
    """Rename unreadable parts to ``part-<id>.parquet.corrupt`` (kept for inspection), so their cells
    count as unfinished and are computed again. Returns the new paths."""
    moved = []
    for path in corrupt_parts(out_dir):
        target = path.with_name(path.name + CORRUPT_SUFFIX)
        path.replace(target)
        moved.append(target)
    return moved


def remove_temp_files(out_dir: Path) -> list[str]:
    """Delete leftovers of interrupted atomic writes (``.part-*.tmp``); they are never valid data."""
    removed = []
    for tmp in out_dir.glob(f".part-*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    return removed


@contextlib.contextmanager
def directory_lock(out_dir: Path) -> Iterator[None]:
    with open(out_dir / ".sweep.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f"another sweep is writing {out_dir}; wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def write_part(out_dir: Path, cell: Cell, frame: pd.DataFrame) -> Path:
    return write_parquet(label(frame, cell), part_path(out_dir, cell.cell_id))


def relabel_parts(cells: list[Cell], out_dir: Path) -> tuple[list[str], set[str]]:
    """Rewrite the label columns of finished parts whose sweep membership changed in the definition.

    Returns the relabelled cell ids and the git commits the finished parts were computed at.
    """
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
            and (
                first["swept_value"] == cell.swept_value
                or (math.isnan(first["swept_value"]) and math.isnan(cell.swept_value))
            )
            and list(first["sweeps"]) == cell.sweeps
        )
        if not same:
            write_part(out_dir, cell, pd.read_parquet(path))
            changed.append(cell.cell_id)
    return changed, commits


def engines_used(frame: pd.DataFrame) -> str:
    """The engines a cell's episodes ran on ("compiled", "python", or both joined by "+")."""
    return "+".join(sorted(frame["engine_used"].dropna().unique()))


def append_timing(out_dir: Path, cell: Cell, info: dict[str, Any], engine_used: str) -> None:
    """One line of ``timings.csv``: the cell, its configured engine and the one its episodes ran on."""
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
        "engine_used": engine_used,
        "faults": s.faults.active,
    }
    header = not path.exists()
    pd.DataFrame([row]).to_csv(path, mode="a", header=header, index=False)
