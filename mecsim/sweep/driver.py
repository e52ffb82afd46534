"""Running a sweep: the cells that have no part yet, on a Dask cluster, written as they finish.

`run_sweep` runs on a `LocalCluster` with one single-threaded worker process per core, each pinned
to its core, or on an existing cluster at ``--scheduler-address`` / ``$MECSIM_DASK_ADDRESS``, and
writes each finished cell atomically to ``results/<experiment>/part-<cell_id>.parquet``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..jaxconfig import compilation_cache_dir
from ..tables import git_commit
from .cells import Experiment, load_experiment
from .planning import calibration, cost, estimate, ordering_cost, plan, plan_batches
from .store import (
    append_timing,
    corrupt_parts,
    directory_lock,
    engines_used,
    finished_cells,
    relabel_parts,
    remove_temp_files,
    set_aside_corrupt_parts,
    write_part,
)
from .worker import EVENT_TOPIC, THREAD_ENV, attempt, compute_batch, each

ADDRESS_ENV = "MECSIM_DASK_ADDRESS"


def worker_environment() -> dict[str, str]:
    """Environment of local worker processes: one thread each, and the shared compilation cache."""
    env = dict(THREAD_ENV)
    cache = compilation_cache_dir()
    if cache is not None and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


def spawn_environment(worker_env: dict[str, str]) -> dict[str, Any]:
    """What the nannies set before spawning a local worker: Dask's defaults and ``worker_env``, without
    Dask's ``MALLOC_TRIM_THRESHOLD_``.

    Dask sets it (65536) so that workers give freed memory back to the OS. Any explicit glibc malloc
    threshold also freezes the mmap threshold at 128 kB, so every larger buffer (a compiled episode's
    inputs and outputs, the tables) was mapped afresh and page-faulted in on each use: a sweep's workers
    spent about a tenth of their CPU time in the kernel (14 million minor faults in the 4-minute `seeds`
    sweep; 0.8 million without). glibc's own adaptive thresholds keep such buffers for reuse.
    """
    import dask

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **worker_env}
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


def describe_plan(
    experiment: str | Path | Experiment,
    results_dir: str | Path = "results",
    workers: int | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Print what a sweep would run and a projected wall time from the measured per-cell costs."""
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    cells = plan(exp, echo)
    out_dir = Path(results_dir) / exp.name
    corrupt = corrupt_parts(out_dir) if out_dir.is_dir() else []
    done = (finished_cells(out_dir) if out_dir.is_dir() else set()) - {
        p.stem.removeprefix("part-") for p in corrupt
    }
    todo = [c for c in cells if c.cell_id not in done]
    if corrupt:
        echo(
            f"note: {len(corrupt)} part(s) are not readable parquet and count as unfinished: "
            f"{', '.join(p.name for p in corrupt)}"
        )
    echo(
        f"experiment {exp.name} ({exp.path}): {len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run"
    )
    counts = pd.DataFrame(
        [{"sweep": c.sweep, "method": c.method, "model": c.scenario.model} for c in todo],
        columns=["sweep", "method", "model"],
    )
    if not counts.empty:
        echo(counts.value_counts(["sweep", "model"]).sort_index().to_string())
    rates = calibration(results_dir)
    seconds, unknown = estimate(todo, rates)
    n = workers or default_workers()
    echo(
        f"projected: {seconds / 3600:.1f} CPU-hours, about {seconds / n / 3600:.1f} h on {n} worker(s) "
        f"(from {int(rates['cells'].sum()) if len(rates) else 0} measured cells in {results_dir}/*/timings.csv; "
        f"cost per episode fitted as a fixed part plus a part per expected task)"
    )
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
    stale: list[str] = field(
        default_factory=list
    )  # parts in the directory that the experiment no longer defines
    removed_temp: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # unreadable parts set aside (their cells run again)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


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

    from .pinning import PinWorkersToCores

    address = scheduler_address or os.environ.get(ADDRESS_ENV)
    if address:
        with Client(address) as client:
            yield client
        return
    n = workers or default_workers()
    worker_env = worker_environment()
    with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_environment(worker_env)}):
        with (
            LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                env=worker_env,
                dashboard_address=None,
                silence_logs=logging.CRITICAL,  # failures reach the client through the futures
            ) as cluster,
            Client(cluster) as client,
        ):
            client.register_plugin(PinWorkersToCores())
            yield client


def run_sweep(
    experiment: str | Path | Experiment,
    *,
    results_dir: str | Path = "results",
    rerun: bool = False,
    scheduler_address: str | None = None,
    workers: int | None = None,
    client: Any = None,
    progress: bool | None = None,
    cell_fn: Callable[[dict[str, Any]], pd.DataFrame] | None = None,
    echo: Callable[[str], None] = print,
) -> SweepReport:
    """Run every unfinished cell of ``experiment``; write ``results_dir/<name>/part-<cell_id>.parquet``.

    ``client``: an existing `distributed.Client` to use (otherwise one is made by `dask_client`).
    Cells run in the batches of `plan_batches` through `compute_batch`; with ``cell_fn(payload)
    -> rows`` given, each cell runs alone through it instead. A batch whose worker is lost runs
    again (Dask's ``allowed-failures``); a batch whose code raises is not retried (it would raise
    again): its cells are reported as failed in the returned `SweepReport`.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    started = time.perf_counter()
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    cells = plan(exp, echo)
    out_dir = Path(results_dir) / exp.name
    out_dir.mkdir(parents=True, exist_ok=True)
    with directory_lock(out_dir):
        report = SweepReport(exp.name, out_dir, total=len(cells), skipped=0)
        report.removed_temp = remove_temp_files(out_dir)
        report.corrupt = [p.name for p in set_aside_corrupt_parts(out_dir)]
        if report.corrupt:
            echo(
                f"note: {len(report.corrupt)} part(s) in {out_dir} were not readable parquet; set aside as "
                f"{', '.join(report.corrupt)}; their cells run again"
            )
        done = set() if rerun else finished_cells(out_dir)
        ids = {c.cell_id for c in cells}
        report.stale = sorted(finished_cells(out_dir) - ids)
        todo = [c for c in cells if c.cell_id not in done]
        report.skipped = len(cells) - len(todo)
        if not rerun:
            report.relabelled, commits = relabel_parts([c for c in cells if c.cell_id in done], out_dir)
            other = sorted(commits - {git_commit()})
            if other:
                echo(
                    f"note: finished parts were computed at other commit(s) {', '.join(c[:10] for c in other)}; "
                    f"the git_commit column says which; --rerun recomputes everything at this commit"
                )
        echo(
            f"sweep {exp.name}: {len(cells)} cells, {report.skipped} already finished, {len(todo)} to run -> {out_dir}"
            + (
                f" (removed {len(report.removed_temp)} temporary file(s) of an interrupted write)"
                if report.removed_temp
                else ""
            )
        )
        if report.stale:
            echo(
                f"note: {len(report.stale)} part(s) in {out_dir} belong to no cell of the current definition; "
                f"`mecsim plot` ignores them"
            )
        if todo:
            if cell_fn is None:
                batch_fn: Callable = compute_batch
                todo_ids = {c.cell_id for c in todo}
                batches = [b for b in plan_batches(cells) if any(c.cell_id in todo_ids for c in b)]
            else:
                batch_fn = functools.partial(each, cell_fn)
                batches = [[c] for c in todo]
            seconds = ordering_cost([c for batch in batches for c in batch], calibration(results_dir))
            batch_cost = lambda batch: sum(seconds[c.cell_id] for c in batch)  # noqa: E731
            batches.sort(key=batch_cost, reverse=True)  # longest first: shortest overall wall time
            run_id = uuid.uuid4().hex
            with contextlib.ExitStack() as stack:
                if client is None:
                    if workers and (scheduler_address or os.environ.get(ADDRESS_ENV)):
                        echo(
                            "note: --workers applies to the local cluster only; the remote cluster keeps its workers"
                        )
                    client = stack.enter_context(dask_client(scheduler_address, workers))
                by_key = {}
                for batch in batches:
                    future = client.submit(
                        attempt,
                        batch_fn,
                        [c.payload() for c in batch],
                        run_id,
                        key=f"mecsim-cell-{batch[0].cell_id}-{run_id[:8]}",
                        pure=False,
                        priority=int(1000 * batch_cost(batch)),
                    )
                    by_key[future.key] = (future, batch)
                total_cost = sum(batch_cost(b) for b in batches)
                done_cost = 0.0
                bar = tqdm(
                    total=len(todo),
                    unit="cell",
                    desc=f"sweep {exp.name}",
                    dynamic_ncols=True,
                    disable=None if progress is None else not progress,
                    file=sys.stderr,
                )
                pending = as_completed([f for f, _ in by_key.values()])
                try:
                    for future in pending:
                        batch = by_key[future.key][1]
                        if future.status == "lost":
                            # finished, but the worker holding the result died before we fetched it:
                            # the scheduler computes it again (bounded by its allowed-failures)
                            pending.add(future)
                            continue
                        _collect(future, batch, done, out_dir, report, bar.write)
                        future.release()
                        done_cost += batch_cost(batch)
                        elapsed = time.perf_counter() - started
                        eta = elapsed * (total_cost - done_cost) / done_cost if done_cost else float("nan")
                        bar.set_postfix(failed=len(report.failed), work_eta=_fmt_s(eta), refresh=False)
                        bar.update(sum(c.cell_id not in done for c in batch))
                except KeyboardInterrupt:
                    bar.close()
                    echo(
                        f"\ninterrupted: {len(report.computed)} cell(s) of this run are saved; "
                        f"run the same command again to finish the remaining {len(todo) - len(report.computed)}"
                    )
                    raise
                finally:
                    bar.close()
                    report.retried = _attempts(
                        client, run_id, {b[0].cell_id: [c.cell_id for c in b] for _, b in by_key.values()}
                    )
    report.wall_s = time.perf_counter() - started
    _summarise(report, echo)
    return report


def _collect(future: Any, batch: list, done: set[str], out_dir: Path, report: SweepReport, write) -> None:
    """Write a finished batch's parts, or record why its cells failed."""
    frames, info = future.result() if future.status == "finished" else (None, _task_failure(future))
    if frames is None:
        for cell in batch:
            report.failed[cell.cell_id] = f"{cell.describe()}: {info['error']}\n{info.get('traceback', '')}"
        others = f" (and {len(batch) - 1} other cell(s) of its batch)" if len(batch) > 1 else ""
        write(f"cell failed: {batch[0].describe()}{others}: {info['error']}")
        return
    total = sum(cost(c) for c in batch)
    for cell, frame in zip(batch, frames):
        if cell.cell_id in done:
            continue  # a resumed batch: this cell's part is already there
        write_part(out_dir, cell, frame)
        share = {**info, "wall_s": info["wall_s"] * cost(cell) / total}
        append_timing(out_dir, cell, share, engines_used(frame))
        report.computed.append(cell.cell_id)


def _task_failure(future: Any) -> dict[str, str]:
    """What went wrong with a task that did not finish (its worker lost too often, or cancelled)."""
    err = future.exception() if future.status == "error" else None
    if err is None:
        return {"error": f"the task ended with status {future.status!r}"}
    tb = "".join(traceback.format_tb(future.traceback())) if future.traceback() else ""
    return {"error": f"{type(err).__name__}: {err}", "traceback": tb}


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
    for error in report.failed.values():
        echo(f"FAILED {error.rstrip()}")
