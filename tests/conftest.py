"""Shared test setup."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """Sweep workers started by the tests share one compilation cache, fresh for each test session."""
    os.environ.setdefault("MECSIM_JAX_CACHE", str(tmp_path_factory.mktemp("jax-cache")))
    yield


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
