"""The JAX CartPole-v1 against gymnasium's, over random action sequences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mecsim.envs import cartpole
from mecsim.jaxconfig import x64

gymnasium = pytest.importorskip("gymnasium")


@pytest.mark.parametrize("seed", range(5))
def test_same_trajectories_as_gymnasium(seed):
    env = gymnasium.make("CartPole-v1")
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    step = jax.jit(cartpole.step)
    with x64():
        state = cartpole.CartPole(jnp.asarray(env.unwrapped.state, jnp.float64), jnp.zeros((), jnp.int32))
        for t in range(600):
            action = int(rng.integers(0, 2))
            obs, reward, terminated, truncated, _ = env.step(action)
            state, r, term, trunc = step(state, action)
            np.testing.assert_allclose(np.asarray(cartpole.observe(state)), obs, rtol=1e-6, atol=1e-7)
            assert (float(r), bool(term), bool(trunc)) == (reward, terminated, truncated), t
            if terminated or truncated:
                obs, _ = env.reset(seed=seed + 1000 + t)
                state = cartpole.CartPole(jnp.asarray(env.unwrapped.state), jnp.zeros((), jnp.int32))


def test_time_limit_truncates_at_500_steps():
    # a balanced pole with no velocity under alternating pushes stays up; the limit ends the episode
    state = cartpole.CartPole(jnp.zeros(4), jnp.asarray(498, jnp.int32))
    state, _, term, trunc = cartpole.step(state, 1)
    assert not bool(term) and not bool(trunc)
    state, _, term, trunc = cartpole.step(state, 0)
    assert not bool(term) and bool(trunc) and int(state.steps) == 500
