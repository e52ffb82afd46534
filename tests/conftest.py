"""Shared test setup."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """Sweep workers started by the tests share one compilation cache, fresh for each test session."""
    os.environ.setdefault("MECSIM_JAX_CACHE", str(tmp_path_factory.mktemp("jax-cache")))
    yield
