"""How the package calls JAX: float64 where the simulation's arithmetic runs, and XLA's CPU options.

Both the compiled kernel and the learners' functions run under `x64`: the delay model in
float64 (parity with NumPy), the networks in float32 by their own dtypes. A function called
both from the SimPy path and from inside the kernel is therefore traced the same way.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp


@lru_cache(maxsize=1)
def compiler_options() -> dict:
    """XLA options for the package's compiled calls.

    On CPU, XLA hands reductions over more than a few thousand elements to a library
    fusion (YNNPACK) whose per-call overhead dominates at the kernel's small shapes
    (measured here: 2-4x slower steps at 32-64 replicas); plain loop fusions are used
    instead. If this XLA does not know the option, its defaults are kept.
    """
    if jax.default_backend() != "cpu":
        return {}
    options = {"xla_cpu_experimental_ynn_fusion_type": ""}
    try:
        jax.jit(lambda x: x.sum(), compiler_options=options)(jnp.ones(4)).block_until_ready()
    except Exception:  # noqa: BLE001 - an unknown option: keep XLA's defaults
        return {}
    return options


def jit(fn, **kwargs):
    """`jax.jit` with the package's compiler options."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


def x64():
    """Context in which compiled functions are traced and called (float64), leaving JAX's global default alone."""
    return jax.enable_x64(True)
