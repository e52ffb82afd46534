"""How the package calls JAX: float64 where the simulation's arithmetic runs, and XLA's CPU options.

Both the compiled kernel and the learners' functions run under `x64`: the delay model in
float64 (parity with NumPy), the networks in float32 by their own dtypes. A function called
both from the SimPy path and from inside the kernel is therefore traced the same way.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import jax
import jax.numpy as jnp

CACHE_ENV = "MECSIM_JAX_CACHE"
"""Where compiled executables are kept on disk (JAX's persistent compilation cache), so that worker
processes and later runs reuse what one process compiled; "off" disables it."""


def compilation_cache_dir() -> str | None:
    """The persistent compilation cache's folder ($MECSIM_JAX_CACHE, default ~/.cache/mecsim/jax), None if off."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mecsim" / "jax"
    cache = os.environ.get(CACHE_ENV) or str(default)
    return None if cache == "off" else cache


COMPILER_OPTIONS = {
    # On CPU, XLA hands reductions over more than a few thousand elements to a library fusion (YNNPACK)
    # whose per-call overhead dominates at the kernel's small shapes (measured here: 2-4x slower steps
    # at 32-64 replicas): plain loop fusions instead.
    "xla_cpu_experimental_ynn_fusion_type": "",
    # Copy insertion that sees through the branches of a conditional: without it, every step of a
    # training scan copied its learner state (AMCoEdge, 24 replicas: 2.3 MB per slot; DDRL-AMSA 4 MB),
    # and every update the parameters and Adam state. Same values, training episodes 4-10 % faster.
    "xla_cpu_copy_insertion_use_region_analysis": True,
}
"""XLA options for the package's compiled calls on CPU; each is dropped if this XLA does not know it."""


@lru_cache(maxsize=1)
def compiler_options() -> dict:
    """The `COMPILER_OPTIONS` this XLA accepts (none on other backends)."""
    if jax.default_backend() != "cpu":
        return {}
    accepted = {}
    for name, value in COMPILER_OPTIONS.items():
        try:
            jax.jit(lambda x: x.sum(), compiler_options={name: value})(jnp.ones(4)).block_until_ready()
        except Exception:  # noqa: BLE001 - an unknown option: keep XLA's default for it
            continue
        accepted[name] = value
    return accepted


def jit(fn, **kwargs):
    """`jax.jit` with the package's compiler options."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


def x64():
    """Context in which compiled functions are traced and called (float64), leaving JAX's global default alone."""
    return jax.enable_x64(True)


CPU_DEVICES_ENV = "MECSIM_CPU_DEVICES"
"""How many CPU devices JAX exposes in a process that imports mecsim (default: one per core the process
may use, at most `DEFAULT_CPU_DEVICES_MAX`); the kernel splits a training call's replicas over them
(`mecsim.backends.kernel.devices`)."""

DEFAULT_CPU_DEVICES_MAX = 8
"""Each device compiles its own copy of a split call (JAX's cache keys name the device), about 8 s for a DQN
learner's episode and 32-42 s for a SAC learner's in a 2-core sweep, one after the other: the default
stops at 8 devices so that compiling stays small beside training."""


def configure_cpu_devices() -> int | None:
    """Expose one JAX CPU device per usable core (at most 8), or $MECSIM_CPU_DEVICES of them; returns the
    number set.

    Only while JAX's backends have not started (the count is fixed then), and not where the process
    chose it itself ($JAX_NUM_CPU_DEVICES, or XLA's ``--xla_force_host_platform_device_count``): None.
    """
    from jax._src import xla_bridge

    count = requested_cpu_devices()
    chosen = "JAX_NUM_CPU_DEVICES" in os.environ or "xla_force_host_platform_device_count" in os.environ.get(
        "XLA_FLAGS", ""
    )
    if chosen or xla_bridge.backends_are_initialized():
        return None
    jax.config.update("jax_num_cpu_devices", count)
    return count


def requested_cpu_devices() -> int:
    """$MECSIM_CPU_DEVICES, or the number of cores this process may use (at most `DEFAULT_CPU_DEVICES_MAX`);
    `ConfigError` if it is not valid."""
    from .config import ConfigError

    raw = os.environ.get(CPU_DEVICES_ENV)
    if raw is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(cores, DEFAULT_CPU_DEVICES_MAX)
    if raw.strip().isdigit() and int(raw) >= 1:
        return int(raw)
    raise ConfigError(f"${CPU_DEVICES_ENV} = {raw!r}: must be a whole number >= 1 (CPU devices per process)")


try:  # at import, before anything starts JAX's backends; a bad value is reported where devices are used
    configure_cpu_devices()
except ValueError:
    pass
