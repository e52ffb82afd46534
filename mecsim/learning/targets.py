"""Target-network updates: the hard copy of DQN and the soft (Polyak) update of actor-critic methods."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def hard_update(due, params, target):
    """``params`` where ``due`` (a traced bool), else ``target``, leaf by leaf."""
    return jax.tree.map(lambda p, q: jnp.where(due, p, q), params, target)


def soft_update(tau: float, params, target):
    """target ← τ·params + (1 − τ)·target."""
    return jax.tree.map(lambda p, q: tau * p + (1.0 - tau) * q, params, target)
