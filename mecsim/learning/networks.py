"""Networks of the learners (Flax linen) and their reference initialisation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict


class MLP(nn.Module):
    """ReLU hidden layers, linear output; weights N(0, init_std), biases ``bias_init`` (TF ``random_normal``)."""

    hidden: Sequence[int]
    n_out: int
    init_std: float = 0.3
    bias_init: float = 0.1

    @nn.compact
    def __call__(self, x):
        kernel = nn.initializers.normal(self.init_std)
        bias = nn.initializers.constant(self.bias_init)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, kernel_init=kernel, bias_init=bias)(x))
        return nn.Dense(self.n_out, kernel_init=kernel, bias_init=bias)(x)


def _torch_bias(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class TorchMLP(nn.Module):
    """ReLU hidden layers, linear output, PyTorch's default ``nn.Linear`` initialisation: weights and
    biases U(−1/√fan_in, 1/√fan_in) (DEdgeAI's networks)."""

    hidden: Sequence[int]
    n_out: int

    @nn.compact
    def __call__(self, x):
        kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # bound 1/√fan_in
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, kernel_init=kernel, bias_init=_torch_bias(x.shape[-1]))(x))
        return nn.Dense(self.n_out, kernel_init=kernel, bias_init=_torch_bias(x.shape[-1]))(x)


_BLOCK = 4096


@jax.jit
def _normal_block(key, index):
    """Block ``index`` of the standard normal stream of ``key``."""
    return jax.random.normal(jax.random.fold_in(key, index), (_BLOCK,), jnp.float32)


@cache
def normal_initialiser(
    hidden: tuple, n_out: int, init_std: float, bias_init: float, n_features: int, lr: float
):
    """``init(keys) -> (params, target, adam_state)``, stacked over one PRNG key per agent.

    Every weight is drawn N(0, init_std) from the agent's key, eval net then target net
    (the target has its own init, overwritten at the first learn); every bias is
    ``bias_init``. The draws come in fixed-size blocks (`_normal_block`), compiled once per
    process whatever the network shape. Adam's initial state is all zeros.
    """
    net = MLP(hidden, n_out, init_std, bias_init)
    abstract = flatten_dict(
        jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1, n_features))))["params"]
    )
    kernels = [path for path in abstract if path[-1] == "kernel"]
    sizes = [int(np.prod(abstract[path].shape)) for path in kernels]
    total = sum(sizes)
    n_blocks = -(-2 * total // _BLOCK)
    tx = optax.adam(lr)

    def draw(keys):
        out = [
            np.concatenate([np.asarray(_normal_block(key, i)) for i in range(n_blocks)])[: 2 * total]
            for key in keys
        ]
        return np.stack(out).reshape(len(keys), 2, total)

    def init(keys):
        z = np.asarray(draw(keys)) * np.float32(init_std)  # (agents, 2, total)
        n_agents = z.shape[0]

        def tree(which):
            flat, offset = {}, 0
            for path, size in zip(kernels, sizes):
                flat[path] = jnp.asarray(
                    z[:, which, offset : offset + size].reshape((n_agents,) + abstract[path].shape)
                )
                offset += size
            for path, leaf in abstract.items():
                if path[-1] != "kernel":
                    flat[path] = jnp.asarray(np.full((n_agents,) + leaf.shape, bias_init, np.float32))
            return unflatten_dict(flat)

        params = tree(0)
        opt_state = jax.tree.map(
            lambda a: jnp.asarray(np.zeros(a.shape, a.dtype)), jax.eval_shape(jax.vmap(tx.init), params)
        )
        return params, tree(1), opt_state

    return init
