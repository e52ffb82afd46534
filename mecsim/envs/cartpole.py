"""CartPole-v1 in pure JAX: gymnasium's equations (Euler integration), its termination bounds and its
500-step time limit, as functions of an explicit state (gymnax-style), so that a training loop can
`lax.scan` over steps and `vmap` over seeds.

The state is kept in the dtype it was created in (float64 under `mecsim.jaxconfig.x64` matches
gymnasium, which integrates in float64 and returns float32 observations).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_CART + MASS_POLE
HALF_LENGTH = 0.5  # gymnasium's "length": half the pole's length
POLE_MASS_LENGTH = MASS_POLE * HALF_LENGTH
FORCE = 10.0
TAU = 0.02  # seconds per step
THETA_LIMIT = 12 * 2 * math.pi / 360
X_LIMIT = 2.4
MAX_STEPS = 500
N_ACTIONS = 2
N_FEATURES = 4


class CartPole(NamedTuple):
    """Cart position and velocity, pole angle and angular velocity (4,), and the step count."""

    physics: jax.Array
    steps: jax.Array


def reset(key, dtype=jnp.float32) -> CartPole:
    """Every variable uniform on [−0.05, 0.05]."""
    return CartPole(jax.random.uniform(key, (4,), dtype, -0.05, 0.05), jnp.zeros((), jnp.int32))


def observe(state: CartPole):
    return state.physics.astype(jnp.float32)


def step(state: CartPole, action):
    """One step: (next state, reward 1, terminated, truncated at MAX_STEPS). The reward is 1 on the
    terminating step too; a truncated step is not terminal (its next state still has a value)."""
    x, x_dot, theta, theta_dot = state.physics
    force = jnp.where(action == 1, FORCE, -FORCE)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    temp = (force + POLE_MASS_LENGTH * theta_dot**2 * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * temp) / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos**2 / TOTAL_MASS))
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
    physics = jnp.stack(
        [x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot, theta_dot + TAU * theta_acc]
    ).astype(state.physics.dtype)
    steps = state.steps + 1
    terminated = (jnp.abs(physics[0]) > X_LIMIT) | (jnp.abs(physics[2]) > THETA_LIMIT)
    truncated = (steps >= MAX_STEPS) & ~terminated
    return CartPole(physics, steps), jnp.ones((), jnp.float32), terminated, truncated
