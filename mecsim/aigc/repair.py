"""Image repair: RePaint (Lugmayr et al., CVPR 2022) with a DDPM ε-network, and plain replacement.

Both sample with N respaced steps (`schedule.respace`, DDPM posterior, η = 1) and, at every step,
put back the known region re-noised from the original to the new step's noise level. RePaint
also goes back: after reaching certain steps it re-noises its sample ``jump_length`` steps with
the forward process and denoises them again, ``resamples − 1`` extra times, so the generated
region harmonises with the known one. With ``resamples = 1`` it is plain replacement.

The chain is one jitted `lax.scan` over a plan of transitions (denoise one step, or re-noise
one step); compiled executables are kept per (batch size, plan), and `Repairer.warm` builds
them ahead, so no compilation lands in a timed request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import data
from .errors import AigcError
from .schedule import Schedule, cosine, respace
from .unet import UNet
from .weights import Model

DENOISE, RENOISE = 0, 1


def repaint_plan(steps: int, jump_length: int = 10, resamples: int = 5) -> np.ndarray:
    """The states visited, as respaced step indices from N − 1 down to −1 (the clean image).

    From each of the steps 0, j, 2j, ... below N − j the sample is re-noised j steps and denoised
    again, ``resamples − 1`` times.
    """
    for name, value, low in (
        ("steps", steps, 1),
        ("jump_length", jump_length, 1),
        ("resamples", resamples, 1),
    ):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise AigcError(f"{name} = {value!r}: give an integer >= {low}")
    pending = {t: resamples - 1 for t in range(0, steps - jump_length, jump_length)}
    t, states = steps, []
    while t >= 1:
        t -= 1
        states.append(t)
        if pending.get(t, 0) > 0:
            pending[t] -= 1
            for _ in range(jump_length):
                t += 1
                states.append(t)
    states.append(-1)
    return np.asarray(states, np.int32)


def transitions(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kind, step) per move between consecutive states: DENOISE from step i (to i − 1) or RENOISE to step i."""
    prev, cur = states[:-1], states[1:]
    kind = np.where(cur < prev, DENOISE, RENOISE).astype(np.int32)
    step = np.where(kind == DENOISE, prev, cur).astype(np.int32)
    return kind, step


def evaluations(steps: int, jump_length: int = 10, resamples: int = 5) -> int:
    """Network evaluations per image of a repair (the denoising moves of the plan)."""
    kind, _ = transitions(repaint_plan(steps, jump_length, resamples))
    return int((kind == DENOISE).sum())


@dataclass
class Repairer:
    """A trained model ready to repair batches; compiled chains cached per (batch size, plan)."""

    model: Model
    _compiled: dict = field(default_factory=dict, repr=False)

    @property
    def side(self) -> int:
        return self.model.unet.side

    def _schedule(self, steps: int) -> Schedule:
        return respace(cosine(self.model.diffusion_steps), steps)

    def _chain(self, steps: int):
        s = self._schedule(steps)
        net = UNet(self.model.unet)
        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        timesteps = f32(s.timesteps)
        sqrt_ab, sqrt_1mab = f32(np.sqrt(s.alpha_bar)), f32(np.sqrt(1 - s.alpha_bar))
        sqrt_ab_prev, sqrt_1mab_prev = f32(np.sqrt(s.alpha_bar_prev)), f32(np.sqrt(1 - s.alpha_bar_prev))
        c_x0, c_xt = f32(s.posterior_coef_x0), f32(s.posterior_coef_xt)
        sigma = f32(np.sqrt(s.posterior_variance))
        sqrt_keep, sqrt_beta = f32(np.sqrt(1 - s.betas)), f32(np.sqrt(s.betas))

        def denoise(params, x, x0, mask, i, key):
            k_gen, k_known = jax.random.split(key)
            t = jnp.full((x.shape[0],), timesteps[i])
            eps = net.apply({"params": params}, x, t)
            x0_hat = jnp.clip((x - sqrt_1mab[i] * eps) / sqrt_ab[i], -1.0, 1.0)
            unknown = c_x0[i] * x0_hat + c_xt[i] * x + sigma[i] * jax.random.normal(k_gen, x.shape)
            known = sqrt_ab_prev[i] * x0 + sqrt_1mab_prev[i] * jax.random.normal(k_known, x.shape)
            return mask * known + (1 - mask) * unknown

        def renoise(x, i, key):
            return sqrt_keep[i] * x + sqrt_beta[i] * jax.random.normal(key, x.shape)

        def run(params, x0, mask, kind, step, key):
            k_start, k_steps = jax.random.split(key)
            x = jax.random.normal(k_start, x0.shape)

            def body(x, move):
                n, kind_n, i = move
                k = jax.random.fold_in(k_steps, n)
                x = jax.lax.cond(
                    kind_n == DENOISE, lambda: denoise(params, x, x0, mask, i, k), lambda: renoise(x, i, k)
                )
                return x, None

            moves = (jnp.arange(kind.shape[0]), kind, step)
            return jax.lax.scan(body, x, moves)[0]

        return run

    def _executable(self, batch: int, steps: int, jump_length: int, resamples: int):
        """The compiled chain and its plan; plans of one length share an executable (the plan is an argument)."""
        kind, step = (jnp.asarray(a) for a in transitions(repaint_plan(steps, jump_length, resamples)))
        key = (batch, steps, kind.shape[0])
        if key not in self._compiled:
            x = jax.ShapeDtypeStruct((batch, self.side, self.side, 1), jnp.float32)
            self._compiled[key] = (
                jax.jit(self._chain(steps))
                .lower(self.model.params, x, x, kind, step, jax.random.PRNGKey(0))
                .compile()
            )
        return self._compiled[key], kind, step

    def warm(self, batches, steps: int, jump_length: int = 10, resamples: int = 5) -> None:
        """Compile the chain for each batch size ahead of time."""
        for b in batches:
            self._executable(int(b), steps, jump_length, resamples)

    def repair(
        self,
        images,
        mask,
        steps: int = 100,
        jump_length: int = 10,
        resamples: int = 5,
        seed: int = 0,
    ) -> np.ndarray:
        """Repair ``images`` (n, side, side) in [0, 1] where ``mask`` is 0; returns (n, side, side) in [0, 1]."""
        from .masks import validate

        x = np.asarray(images, np.float32)
        if x.ndim != 3 or x.shape[0] < 1:
            raise AigcError(f"images: shape {x.shape}; expected (n, {self.side}, {self.side}) with n >= 1")
        if x.shape[1:] != (self.side, self.side):
            raise AigcError(
                f"images: {x.shape[1]} x {x.shape[2]} pixels; this model repairs {self.side} x {self.side} "
                f"images (trained on {self.model.dataset!r})"
            )
        if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
            raise AigcError("images: values must be finite and within [0, 1]")
        m = validate(mask, x.shape[0], self.side)
        compiled, kind, step = self._executable(x.shape[0], steps, jump_length, resamples)
        out = compiled(
            self.model.params, data.to_model(x), m[..., None], kind, step, jax.random.PRNGKey(seed)
        )
        return data.from_model(out)
