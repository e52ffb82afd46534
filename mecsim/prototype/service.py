"""What an edge server runs: the image-repair model as a Dask worker plugin, and the task functions.

`RepairService` loads the shipped weights once per worker and compiles every (images, steps)
request shape at set-up (with JAX's persistent compilation cache, so later workers and runs load
them), so no compilation lands inside a measured task. The task functions are plain module-level
functions: a real cluster's workers import them from the installed package.

A request is replacement sampling (RePaint with r = 1) with ``steps`` denoising steps, which costs
``images x steps`` network evaluations. In loopback mode a worker has no CPU quota; its
capacity is emulated by sleeping ``(1/share − 1)`` times the compute it just did (``slowdown``).
"""

from __future__ import annotations

import os
import time

import numpy as np
from distributed import WorkerPlugin, get_worker

PLUGIN = "mecsim-repair"
WORKER_ENV = {
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
}
"""Every worker (and the warm-up) computes on one thread: its CPU share is its capacity."""


def enable_cache() -> None:
    """Use the package's persistent compilation cache (`mecsim.jaxconfig.compilation_cache_dir`)."""
    import jax

    from ..jaxconfig import compilation_cache_dir

    cache = compilation_cache_dir()
    if cache is not None:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def warm_shapes(max_images: int, step_choices) -> list[tuple[int, int]]:
    return [(b, s) for s in step_choices for b in range(1, max_images + 1)]


class RepairService(WorkerPlugin):
    """The repair model on one worker; ``slowdown`` maps a worker name to its emulated CPU share (loopback)."""

    name = PLUGIN

    def __init__(self, max_images: int, step_choices, slowdown: dict[str, float] | None = None):
        self.max_images = max_images
        self.step_choices = tuple(step_choices)
        self.slowdown = dict(slowdown or {})
        self.repairer = None
        self.share = 1.0

    def setup(self, worker) -> None:
        preloaded = _PRELOADED.get((self.max_images, self.step_choices))
        self.repairer = preloaded or load_repairer(self.max_images, self.step_choices)
        self.share = float(self.slowdown.get(str(worker.name), 1.0))


def load_repairer(max_images: int, step_choices):
    """The shipped model with every request shape compiled."""
    enable_cache()
    from ..aigc import data, masks, weights
    from ..aigc.repair import Repairer

    held = data.load("digits", "held-out").images  # cached: make_part reads it
    repairer = Repairer(weights.load())
    for b, s in warm_shapes(max_images, step_choices):
        repairer.warm([b], s, 1, 1)
        repairer.repair(held[:b], masks.make("centre", b, held.shape[1]), steps=s, jump_length=1, resamples=1)
    return repairer


_PRELOADED: dict = {}
SHAPES_ENV = "MECSIM_PROTOTYPE_SHAPES"


def dask_setup(worker) -> None:
    """``dask worker --preload mecsim.prototype.service``: load and compile before joining the scheduler.

    The one-machine prototype uses it so that compilation happens before the CPU quotas are set;
    the plugin then finds the model loaded. A real cluster's workers need not preload.
    """
    shapes = os.environ.get(SHAPES_ENV)
    if shapes:
        max_images, *steps = (int(v) for v in shapes.split(","))
        _PRELOADED[(max_images, tuple(steps))] = load_repairer(max_images, steps)


def _service() -> RepairService:
    plugin = get_worker().plugins.get(PLUGIN)
    if plugin is None or plugin.repairer is None:
        raise RuntimeError(f"worker {get_worker().name}: the {PLUGIN} plugin is not set up")
    return plugin


def make_part(task_seed: int, first: int, count: int, mask: str) -> dict:
    """A request's sub-batch, made where the request arrives (on its BS's worker): 8-bit images and mask."""
    from ..aigc import data, masks

    held = data.load("digits", "held-out").images
    index = (task_seed * 7919 + first + np.arange(count)) % len(held)
    picture = np.round(held[index] * 255).astype(np.uint8)
    return {
        "images": picture,
        "mask": masks.make(mask, count, held.shape[1], seed=task_seed).astype(np.uint8),
    }


def repair_part(part: dict, steps: int, seed: int) -> dict:
    """Repair one sub-batch; returns the 8-bit images and the compute interval (worker clock)."""
    service = _service()
    started = time.time()
    out = service.repairer.repair(
        part["images"] / 255.0, part["mask"], steps=int(steps), jump_length=1, resamples=1, seed=int(seed)
    )
    computed = time.time()
    if service.share < 1.0:  # loopback: the labelled slowdown that stands in for a CPU quota
        time.sleep((computed - started) * (1.0 / service.share - 1.0))
    return {"images": np.round(out * 255).astype(np.uint8), "started": started, "ended": time.time()}


def fetch(result: dict) -> float:
    """Runs on the BS's worker once a remote sub-batch's result has arrived there; returns when it did."""
    assert result["images"].dtype == np.uint8
    return time.time()


def echo(payload) -> float:
    """Calibration: a payload made on one worker, received on another."""
    return time.time()


def submit_subbatch(client, bs: int, es: int, seed: int, first: int, count: int, steps: int, mask: str,
                    name: str | None = None, part=None) -> tuple:  # fmt: skip
    """The three tasks of one sub-batch: its input made on BS ``bs``'s worker (unless ``part`` is given),
    repaired on ES ``es`` (by its resource: one sub-batch at a time), and fetched back to the BS.
    Returns the three futures; ``name`` makes their keys ``part-<name>``, ``repair-<name>``, ``fetch-<name>``."""

    def key(kind: str) -> str | None:
        return None if name is None else f"{kind}-{name}"

    if part is None:
        part = client.submit(
            make_part, seed, first, count, mask, key=key("part"), workers=[f"ES{bs}"], pure=False
        )
    repaired = client.submit(
        repair_part, part, steps, seed, key=key("repair"), resources={f"ES{es}": 1}, pure=False
    )
    fetched = client.submit(fetch, repaired, key=key("fetch"), workers=[f"ES{bs}"], pure=False)
    return part, repaired, fetched
