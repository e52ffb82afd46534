"""The worker side of a sweep: compute a batch of cells and return their tables (workers write nothing).

Workers return tables to the client, which does all the writing, so a remote cluster
needs no shared file system.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import pandas as pd

from ..config import Scenario

EVENT_TOPIC = "mecsim-sweep"

# Worker processes: one thread each for BLAS and XLA, so that N workers use N cores.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}

# Identity columns written in front of the runner's columns in every part.
LABEL_COLUMNS = ("experiment", "sweep", "swept_value", "sweeps")


def limit_threads() -> None:
    """One BLAS/XLA thread per worker (effective only before numpy's BLAS / jax initialise)."""
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)


def _log_event(run_id: str, cell_id: str, event: str, **extra: Any) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(
            EVENT_TOPIC,
            {
                "run": run_id,
                "cell": cell_id,
                "event": event,
                "where": f"{socket.gethostname()}:{os.getpid()}",
                **extra,
            },
        )
    except (ImportError, ValueError):
        pass  # not on a Dask worker


def compute_cell(payload: dict[str, Any]) -> pd.DataFrame:
    """Run one cell: heuristic with `mecsim.runner.run`, learner with `mecsim.training.train`; its rows."""
    return compute_batch([payload])[0]


def compute_batch(payloads: list[dict[str, Any]]) -> list[pd.DataFrame]:
    """Run cells that `planning.plan_batches` put together (a single cell runs alone).

    Several cells run on the kernel in shared compiled calls (`mecsim.training.train_many`,
    `mecsim.runner.run_many`); each cell's rows equal its own run's up to the last bit of rounding.
    """
    limit_threads()
    from ..backends.kernel.devices import at_most

    with at_most(1):  # one device per batch, whatever the worker's machine has (`devices.at_most`)
        return _compute_batch(payloads)


def _compute_batch(payloads: list[dict[str, Any]]) -> list[pd.DataFrame]:
    first = payloads[0]
    name, episodes = first["scheduler"], first["episodes"]
    scenarios = [Scenario(**p["scenario"]) for p in payloads]
    common = dict(timing=first["timing"], engine=first["engine"])
    if first["learner"]:
        from ..training import train, train_many

        kwargs = dict(eval_episodes=first["eval_episodes"], options=first["options"], **common)
        if len(scenarios) == 1:
            frames = [train(scenarios[0], name, episodes, progress=False, **kwargs).episodes]
        else:
            frames = [r.episodes for r in train_many(scenarios, name, episodes, **kwargs)]
    else:
        from ..runner import run, run_many

        kwargs = dict(scheduler_options=first["options"], **common)
        if len(scenarios) == 1:
            frames = [run(scenarios[0], name, episodes, progress=False, **kwargs)[0]]
        else:
            frames = run_many(scenarios, name, episodes, **kwargs)
    return [decorate(frame, p) for frame, p in zip(frames, payloads)]


def each(
    cell_fn: Callable[[dict[str, Any]], pd.DataFrame], payloads: list[dict[str, Any]]
) -> list[pd.DataFrame]:
    """A batch function that runs every cell alone through ``cell_fn``."""
    return [cell_fn(p) for p in payloads]


def attempt(
    batch_fn: Callable[[list[dict[str, Any]]], list[pd.DataFrame]],
    payloads: list[dict[str, Any]],
    run_id: str,
):
    """One attempt at a batch of cells on a worker: ``(frames, info)``, or ``(None, info)`` with the error.

    An error raised by the cells' code is returned, not raised: it would happen again, so the
    driver reports it instead of retrying. Only a lost worker makes Dask run the batch again.
    """
    limit_threads()
    for payload in payloads:
        _log_event(run_id, payload["cell_id"], "start")
    started = time.perf_counter()
    info: dict[str, Any] = {"where": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        frames = batch_fn(payloads)
    except Exception as err:  # noqa: BLE001 - reported per cell by the driver
        for payload in payloads:
            _log_event(run_id, payload["cell_id"], "error", error=f"{type(err).__name__}: {err}")
        return None, {**info, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    return frames, {**info, "wall_s": time.perf_counter() - started}


def decorate(frame: pd.DataFrame, payload: dict[str, Any]) -> pd.DataFrame:
    """The cell's identity columns in front of the runner's table."""
    frame = frame.copy()
    frame.insert(0, "episodes_planned", payload["episodes"])
    frame.insert(0, "engine", payload["engine"])
    frame.insert(0, "method_kind", "learner" if payload["learner"] else "heuristic")
    frame.insert(0, "method", payload["method"])
    frame.insert(0, "cell_id", payload["cell_id"])
    return frame
