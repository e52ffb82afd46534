"""A training call's replicas split over several CPU devices, so that one process uses more than one core.

XLA runs a compiled call on one CPU device, and at the kernel's small shapes mostly on one thread. With
several CPU devices (`mecsim.jaxconfig.configure_cpu_devices`: one per core by default), `OnDevices`
runs the same compiled function on each device with its contiguous share of the replicas, side by side.
Each device's call is an ordinary call of that many replicas, so the results are those of training the
groups apart, to the bit (`tests/test_kernel_devices.py`); the counters all replicas share do not depend
on the data and come out equal on every device. (One program partitioned over the devices, with
``shard_map`` or ``pmap``, rounded some float32 learner steps differently; this does not.)

Between calls a split value stays on its devices as `Parts`; `joined` brings it to the host whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import jax
import numpy as np

from ...jaxconfig import requested_cpu_devices


class Parts(list):
    """A value whose leading (replica) axis is held in parts, one per device, in replica order."""


_AT_MOST: ContextVar[int | None] = ContextVar("replica_devices_at_most", default=None)


@contextmanager
def at_most(devices: int) -> Iterator[None]:
    """Within it, no call is split over more than ``devices`` CPU devices. A sweep's worker computes its
    batches within ``at_most(1)``: there the batches share out the cores, and a batch's rows must not
    depend on how many cores the worker's machine has."""
    token = _AT_MOST.set(devices)
    try:
        yield
    finally:
        _AT_MOST.reset(token)


def replica_devices(n_replicas: int, limit: int | None = None) -> int:
    """How many CPU devices to split ``n_replicas`` over: the most, up to ``limit`` (and `at_most`), that
    divide them evenly (1: no split; also on other backends). Refuses a ``limit`` below 1 (`ValueError`)
    and a bad $MECSIM_CPU_DEVICES (`ConfigError`)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"devices = {limit!r}: must be a whole number >= 1 (or None: all that fit)")
    requested_cpu_devices()
    if jax.default_backend() != "cpu":
        return 1
    available = len(jax.local_devices(backend="cpu"))
    most = min(available, n_replicas, limit or available, _AT_MOST.get() or available)
    return max(d for d in range(1, most + 1) if n_replicas % d == 0)


def joined(value):
    """``value`` on the host (NumPy), its `Parts` (if split) joined along the replica axis."""
    if not isinstance(value, Parts):
        return jax.device_get(value)
    return jax.tree.map(lambda *xs: np.concatenate(xs), *jax.device_get(list(value)))


def _part(value, k: int, devices: int):
    if isinstance(value, Parts):
        return value[k]

    def rows(a):
        if np.ndim(a) == 0 or a.shape[0] % devices:
            raise ValueError(
                f"OnDevices: an input of shape {np.shape(a)} has no replica axis divisible by {devices}"
            )
        n = a.shape[0] // devices
        return a[k * n : (k + 1) * n]

    return jax.tree.map(rows, value)


class OnDevices:
    """``fn`` (jitted) called on each of ``devices`` CPU devices with its share of the replicas.

    Every argument and output has the replicas on its leading axis, except those flagged ``shared`` (the
    same for every replica: the counters). Split outputs come back as `Parts`, shared ones from the first
    device; the calls are dispatched without waiting, as one call is.
    """

    def __init__(self, fn: Callable, devices: int, shared_in: Sequence[bool], shared_out: Sequence[bool]):
        self.fn, self.shared_in, self.shared_out = fn, tuple(shared_in), tuple(shared_out)
        self.devices = jax.local_devices(backend="cpu")[:devices]

    def __call__(self, *args):
        d = len(self.devices)
        calls = []
        for k, device in enumerate(self.devices):
            mine = [a if shared else _part(a, k, d) for a, shared in zip(args, self.shared_in)]
            calls.append(self.fn(*jax.device_put(mine, device)))
        return tuple(
            calls[0][i] if shared else Parts(c[i] for c in calls) for i, shared in enumerate(self.shared_out)
        )


def on_devices(fn: Callable, devices: int, shared_in: Sequence[bool], shared_out: Sequence[bool]) -> Callable:
    """`OnDevices` for ``devices`` > 1, else ``fn`` itself."""
    return fn if devices == 1 else OnDevices(fn, devices, shared_in, shared_out)
