"""The cosine noise schedule (Nichol & Dhariwal 2021), its respacing to fewer steps, and the forward process.

ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2), s = 0.008, t = 1..T; β_t = min(1 − ᾱ_t/ᾱ_{t−1}, 0.999).
Index i = 0..T−1 below stands for t = i + 1 (so ᾱ[0] is the least noisy step).
A respaced schedule keeps N of the T steps (evenly spaced, the last one always) and recomputes
β from the kept ᾱ, so sampling with N steps follows the same marginals q(x_t | x_0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import AigcError

COSINE_OFFSET = 0.008
MAX_BETA = 0.999


@dataclass(frozen=True)
class Schedule:
    """Per-step coefficients (float64 NumPy arrays of length N), and the training steps they stand for."""

    timesteps: np.ndarray  # the training step index (0..T-1) of each step
    alpha_bar: np.ndarray
    betas: np.ndarray

    def __len__(self) -> int:
        return len(self.betas)

    @property
    def alpha_bar_prev(self) -> np.ndarray:
        return np.concatenate([[1.0], self.alpha_bar[:-1]])

    @property
    def posterior_variance(self) -> np.ndarray:
        """β̃_i = β_i (1 − ᾱ_{i−1}) / (1 − ᾱ_i), the variance of q(x_{i−1} | x_i, x_0)."""
        return self.betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)

    @property
    def posterior_coef_x0(self) -> np.ndarray:
        return self.betas * np.sqrt(self.alpha_bar_prev) / (1.0 - self.alpha_bar)

    @property
    def posterior_coef_xt(self) -> np.ndarray:
        return (1.0 - self.alpha_bar_prev) * np.sqrt(1.0 - self.betas) / (1.0 - self.alpha_bar)


def cosine(steps: int = 1000) -> Schedule:
    """The cosine schedule with ``steps`` training steps T."""
    if not isinstance(steps, int) or steps < 1:
        raise AigcError(f"steps = {steps!r}: give an integer >= 1")
    t = np.arange(steps + 1, dtype=np.float64)
    f = np.cos(((t / steps + COSINE_OFFSET) / (1 + COSINE_OFFSET)) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], MAX_BETA)
    return Schedule(np.arange(steps), np.cumprod(1.0 - betas), betas)


def respace(schedule: Schedule, steps: int) -> Schedule:
    """Keep ``steps`` evenly spaced steps of ``schedule`` (the noisiest always kept); β from the kept ᾱ."""
    total = len(schedule)
    if not isinstance(steps, int) or not 1 <= steps <= total:
        raise AigcError(f"steps = {steps!r}: give an integer in 1..{total} (the schedule's training steps)")
    keep = np.unique(np.round(np.linspace(0, total - 1, steps)).astype(int))
    alpha_bar = schedule.alpha_bar[keep]
    prev = np.concatenate([[1.0], alpha_bar[:-1]])
    return Schedule(schedule.timesteps[keep], alpha_bar, 1.0 - alpha_bar / prev)
