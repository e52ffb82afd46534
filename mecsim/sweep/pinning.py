"""Pinning a local cluster's workers to their cores (imported with Dask, when a local cluster starts)."""

from __future__ import annotations

import contextlib
import os

from distributed.diagnostics.plugin import WorkerPlugin


def pin_to_core(index: int) -> int | None:
    """Pin every thread of this process to one of the cores it may use (the ``index``-th, round robin);
    returns that core, or None where affinities cannot be set.

    XLA's CPU runtime keeps a second thread busy beside the one computing, even with
    `worker.THREAD_ENV`'s flags: two workers on two cores then take about 1.5 cores each, and in a
    measured pair of training runs each ran 1.3-1.6 times slower than with every worker pinned to its
    own core. Threads started later (XLA's) inherit the pin."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None
    core = cores[index % len(cores)]
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that has just ended
            os.sched_setaffinity(int(tid), {core})
    return core


class PinWorkersToCores(WorkerPlugin):
    """Dask worker plugin of a local cluster: worker i is pinned to core i (`pin_to_core`), before any
    cell starts JAX. Workers of a cluster given by address are left as their owner started them."""

    name = "mecsim-pin-to-core"

    def setup(self, worker) -> None:
        if isinstance(worker.name, int):
            pin_to_core(worker.name)
