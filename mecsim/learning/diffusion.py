"""The diffusion policy of LAD-TS / D2SAC (reference spec §6.2), as pure JAX functions.

A denoising chain of I steps (VP β-schedule) turns a start point x_I ∈ R^A into x_0, and
the policy is π = softmax(x_0). Each step predicts the noise with a state-conditioned
network ε_θ(x_k, k, s) and takes the DDPM posterior step

    x̂_0     = √(1/ᾱ_k)·x_k − √(1/ᾱ_k − 1)·ε_θ(x_k, k, s)          (no clipping)
    x_{k−1} = c1_k·x̂_0 + c2_k·x_k + σ_k·z,   z ~ N(0, I), no noise at k = 0.

The start point is the latent action memory X[t, b, n] (LAD) or Gaussian noise (D2SAC).
The whole chain is one reparameterised function, so the actor's loss differentiates
through every step. The reference's ε-network ends in a softmax (its "noise" lies on the
simplex): kept behind ``eps_softmax``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .networks import TorchMLP


class Schedule(NamedTuple):
    """Per-step coefficients of the denoising chain, index k = 0..I−1 (float64 numpy arrays)."""

    betas: np.ndarray
    alphas_cumprod: np.ndarray
    sqrt_recip: np.ndarray  # √(1/ᾱ_k)
    sqrt_recipm1: np.ndarray  # √(1/ᾱ_k − 1)
    coef1: np.ndarray  # posterior mean coefficient of x̂_0
    coef2: np.ndarray  # posterior mean coefficient of x_k
    sigma: np.ndarray  # posterior standard deviation (0 at k = 0)


def vp_schedule(steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> Schedule:
    """The VP schedule β_k = 1 − exp(−β_min/I − ½(β_max − β_min)(2k − 1)/I²), k = 1..I, and the
    DDPM posterior coefficients derived from it."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"diffusion_steps = {steps!r}: must be an integer >= 1")
    t = np.arange(1, steps + 1, dtype=float)
    betas = 1.0 - np.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps**2)
    alphas = 1.0 - betas
    cumprod = np.cumprod(alphas)
    prev = np.concatenate([[1.0], cumprod[:-1]])
    variance = betas * (1.0 - prev) / (1.0 - cumprod)
    return Schedule(
        betas=betas,
        alphas_cumprod=cumprod,
        sqrt_recip=np.sqrt(1.0 / cumprod),
        sqrt_recipm1=np.sqrt(1.0 / cumprod - 1.0),
        coef1=betas * np.sqrt(prev) / (1.0 - cumprod),
        coef2=(1.0 - prev) * np.sqrt(alphas) / (1.0 - cumprod),
        sigma=np.where(np.arange(steps) == 0, 0.0, np.sqrt(variance)),
    )


def sinusoidal_embedding(k, dim: int = 16):
    """[sin(k·ω_j), cos(k·ω_j)], ω_j = exp(−j·ln(10000)/(dim/2 − 1)), j = 0..dim/2 − 1."""
    half = dim // 2
    freqs = jnp.exp(-jnp.arange(half) * (math.log(10000.0) / (half - 1)))
    angles = jnp.asarray(k, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class EpsNet(nn.Module):
    """ε_θ(x, k, s): [x, emb(k), s] → hidden ReLU layers → A (softmax when ``softmax``: the reference)."""

    hidden: tuple[int, ...]
    n_actions: int
    t_dim: int = 16
    softmax: bool = True

    @nn.compact
    def __call__(self, x, k, s):
        emb = jnp.broadcast_to(sinusoidal_embedding(k, self.t_dim), x.shape[:-1] + (self.t_dim,))
        out = TorchMLP(self.hidden, self.n_actions)(jnp.concatenate([x, emb, s], axis=-1))
        return jax.nn.softmax(out, axis=-1) if self.softmax else out


def denoise(params, schedule: Schedule, states, start, key, noise_scale: float = 1.0, softmax: bool = True):
    """Run the chain of an `EpsNet` (its ``params``) from ``start`` (n, A) for ``states`` (n, F); returns
    x_0 (n, A). Differentiable in ``params`` (reparameterised noise).

    The network's first layer acts on [x, emb(k), s]; its s and emb(k) parts are the same at every
    step, so they are computed once (the same function as `EpsNet`, with a third of the work).
    ``noise_scale`` multiplies σ_k·z (0: the deterministic chain, an ablation).
    """
    layers = params["TorchMLP_0"]
    names = sorted(layers, key=lambda name: int(name.split("_")[1]))
    first, rest = layers[names[0]], [layers[name] for name in names[1:]]
    n_actions = start.shape[-1]
    t_dim = first["kernel"].shape[0] - n_actions - states.shape[-1]
    k_x, k_t, k_s = (
        first["kernel"][:n_actions],
        first["kernel"][n_actions : n_actions + t_dim],
        first["kernel"][n_actions + t_dim :],
    )
    shared = states @ k_s + first["bias"]  # (n, H)
    steps = schedule.betas.shape[0]
    embeddings = sinusoidal_embedding(jnp.arange(steps), t_dim) @ k_t  # (I, H)
    # none at k = 0; the deterministic chain draws nothing (the draws are a third of a training episode)
    noisy = noise_scale != 0
    noise = jax.random.normal(key, (steps - 1,) + start.shape, start.dtype) if noisy else None
    x = start
    for k in reversed(range(steps)):  # I is small (5): unrolled, each step with its own constants
        h = jax.nn.relu(x @ k_x + shared + embeddings[k])
        for i, layer in enumerate(rest):
            h = h @ layer["kernel"] + layer["bias"]
            if i < len(rest) - 1:
                h = jax.nn.relu(h)
        eps = jax.nn.softmax(h, axis=-1) if softmax else h
        # Python floats: weakly typed, so the chain stays in the networks' float32
        x0 = float(schedule.sqrt_recip[k]) * x - float(schedule.sqrt_recipm1[k]) * eps
        x = float(schedule.coef1[k]) * x0 + float(schedule.coef2[k]) * x
        if k > 0 and noisy:
            x = x + (noise_scale * float(schedule.sigma[k])) * noise[k - 1]
    return x
