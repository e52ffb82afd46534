"""Shared test setup."""

from __future__ import annotations

import gc
import os
import sys

import pytest

# Two JAX CPU devices on any machine (mecsim exposes one per core by default), so that the tests that split
# a training call's replicas over devices run everywhere; set before anything imports mecsim or starts JAX.
os.environ.setdefault("MECSIM_CPU_DEVICES", "2")


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """Sweep workers started by the tests share one compilation cache, fresh for each test session."""
    os.environ.setdefault("MECSIM_JAX_CACHE", str(tmp_path_factory.mktemp("jax-cache")))
    yield


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_code():
    """Release each test module's compiled kernels after it. XLA maps memory regions of its own for every
    executable; the whole suite's in one process passed the kernel's limit on mappings (vm.max_map_count,
    65 530 here), and XLA then crashed compiling the next function (a segmentation fault)."""
    yield
    if "jax" not in sys.modules:
        return
    import jax

    from mecsim.backends.kernel import event_episode, scan, training

    for compiled in (
        scan.compiled_episodes,
        scan.compiled_slots,
        event_episode.compiled_episodes,
        training.compiled_train_episode,
    ):
        compiled.cache_clear()
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def use_reruns(monkeypatch):
    """Replace the shipped reference reruns with AMCoEdge runs of its own environment: ``use({run: curve})``,
    each curve a list of per-episode make-spans."""
    import pandas as pd

    from mecsim.report import data

    def use(curves: dict[int, list[float]]) -> None:
        frame = pd.DataFrame(
            [
                {
                    "method": "amcoedge",
                    "environment": "own preset",
                    "run": run,
                    "episode": e,
                    "mean_makespan": m,
                    "failure_rate": 0.0,
                }
                for run, curve in curves.items()
                for e, m in enumerate(curve)
            ]
        )
        monkeypatch.setattr(data, "reference_reruns", lambda: frame)

    return use
