"""The ε-network: a small convolutional UNet in Flax linen.

GroupNorm residual blocks conditioned on a sinusoidal time embedding; down-sampling by
average pooling, up-sampling by nearest-neighbour resize followed by a 3 × 3 convolution
(XLA runs transposed convolutions slowly on CPU). One resolution per entry of ``channels``,
halving each time (the default (32, 48): 16 → 8 for digits, 28 → 14 for MNIST; ~160 k
parameters), with a skip connection at each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class UNetConfig:
    """The architecture (saved beside the weights, so a weights file says which network it fits)."""

    side: int = 16
    channels: tuple[int, ...] = (32, 48)
    groups: int = 8
    time_dim: int = 64

    def __post_init__(self):
        if self.side % 2 ** (len(self.channels) - 1):
            raise ValueError(
                f"side = {self.side}: must be divisible by 2^{len(self.channels) - 1} for these channels"
            )
        if any(c % self.groups for c in self.channels):
            raise ValueError(
                f"channels = {list(self.channels)}: each must be a multiple of groups = {self.groups}"
            )


def time_embedding(t, dim: int):
    """Sinusoidal embedding of the (float) training step t, (n,) -> (n, dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
    angles = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class ResBlock(nn.Module):
    channels: int
    groups: int

    @nn.compact
    def __call__(self, x, temb):
        h = nn.Conv(self.channels, (3, 3))(nn.swish(nn.GroupNorm(num_groups=self.groups)(x)))
        h = h + nn.Dense(self.channels)(nn.swish(temb))[:, None, None, :]
        h = nn.Conv(self.channels, (3, 3))(nn.swish(nn.GroupNorm(num_groups=self.groups)(h)))
        skip = x if x.shape[-1] == self.channels else nn.Conv(self.channels, (1, 1))(x)
        return skip + h


class UNet(nn.Module):
    config: UNetConfig

    @nn.compact
    def __call__(self, x, t):
        """ε̂ for images x (n, side, side, 1) at training steps t (n,)."""
        cfg = self.config
        temb = nn.Dense(cfg.time_dim)(time_embedding(t, cfg.time_dim))
        temb = nn.Dense(cfg.time_dim)(nn.swish(temb))
        h = nn.Conv(cfg.channels[0], (3, 3))(x)
        skips = []
        for level, ch in enumerate(cfg.channels):
            h = ResBlock(ch, cfg.groups)(h, temb)
            if level < len(cfg.channels) - 1:
                skips.append(h)
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = ResBlock(cfg.channels[-1], cfg.groups)(h, temb)
        for ch, skip in zip(reversed(cfg.channels[:-1]), reversed(skips)):
            n, side, _, c = h.shape
            h = jax.image.resize(h, (n, 2 * side, 2 * side, c), "nearest")
            h = nn.Conv(ch, (3, 3))(h)
            h = ResBlock(ch, cfg.groups)(jnp.concatenate([h, skip], axis=-1), temb)
        h = nn.swish(nn.GroupNorm(num_groups=cfg.groups)(h))
        return nn.Conv(1, (3, 3))(h)


def init_params(config: UNetConfig, seed: int):
    x = jnp.zeros((1, config.side, config.side, 1), jnp.float32)
    return UNet(config).init(jax.random.PRNGKey(seed), x, jnp.zeros((1,)))["params"]


def parameter_count(params) -> int:
    return int(sum(p.size for p in jax.tree.leaves(params)))
