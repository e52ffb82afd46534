"""Training the ε-network from scratch: ε-prediction MSE, Adam with warm-up and cosine decay, an EMA of the
weights (what is saved), checkpoints every few hundred iterations and resume from them.

The training state (parameters, EMA, optimiser, iteration, key) is checkpointed atomically to
``<out>.ckpt``; rerunning the same command resumes from it, and a finished run writes ``<out>``
(the EMA weights) and removes the checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from pydantic import BaseModel, ConfigDict, Field

from ..results import write_bytes
from . import data
from .schedule import cosine
from .unet import UNet, UNetConfig, init_params, parameter_count
from .weights import Model, save


class TrainConfig(BaseModel):
    """How the repair model is trained (``mecsim aigc train`` options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "digits"
    iterations: int = Field(3000, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    warmup: int = Field(100, ge=0)
    ema_decay: float = Field(0.995, ge=0, lt=1)
    diffusion_steps: int = Field(1000, ge=1)
    channels: tuple[int, ...] = (32, 48)
    seed: int = 0
    checkpoint_every: int = Field(250, ge=1)


@dataclass(frozen=True)
class TrainResult:
    model: Model
    path: Path
    losses: np.ndarray  # per iteration of this call
    seconds: float
    resumed_from: int


def _optimizer(cfg: TrainConfig):
    lr = optax.warmup_cosine_decay_schedule(
        0.0,
        cfg.learning_rate,
        min(cfg.warmup, cfg.iterations // 2),
        cfg.iterations + 1,
        cfg.learning_rate / 10,
    )
    return optax.adam(lr)


@lru_cache(maxsize=4)  # one compiled step per configuration, also across resumed runs
def make_step(cfg: TrainConfig, unet: UNetConfig):
    net = UNet(unet)
    schedule = cosine(cfg.diffusion_steps)
    sqrt_ab = jnp.asarray(np.sqrt(schedule.alpha_bar), jnp.float32)
    sqrt_1mab = jnp.asarray(np.sqrt(1.0 - schedule.alpha_bar), jnp.float32)
    opt = _optimizer(cfg)

    def loss_fn(params, x0, t, eps):
        xt = sqrt_ab[t][:, None, None, None] * x0 + sqrt_1mab[t][:, None, None, None] * eps
        return jnp.mean((net.apply({"params": params}, xt, t.astype(jnp.float32)) - eps) ** 2)

    @jax.jit
    def step(state, images):
        params, ema, opt_state, key = state["params"], state["ema"], state["opt"], state["key"]
        key, k_pick, k_t, k_eps = jax.random.split(key, 4)
        x0 = images[jax.random.randint(k_pick, (cfg.batch_size,), 0, images.shape[0])]
        t = jax.random.randint(k_t, (cfg.batch_size,), 0, cfg.diffusion_steps)
        eps = jax.random.normal(k_eps, x0.shape)
        loss, grads = jax.value_and_grad(loss_fn)(params, x0, t, eps)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = optax.incremental_update(params, ema, 1.0 - cfg.ema_decay)
        return {"params": params, "ema": ema, "opt": opt_state, "key": key, "it": state["it"] + 1}, loss

    return step


def initial_state(cfg: TrainConfig, unet: UNetConfig) -> dict:
    params = init_params(unet, cfg.seed)
    return {
        "params": params,
        "ema": params,
        "opt": _optimizer(cfg).init(params),
        "key": jax.random.PRNGKey(cfg.seed + 1),
        "it": jnp.zeros((), jnp.int32),
    }


def train(cfg: TrainConfig, out: str | Path, progress: bool = True) -> TrainResult:
    """Train (or resume from ``<out>.ckpt``) and write the EMA weights to ``out``."""
    from tqdm.auto import tqdm

    out = Path(out)
    ckpt = out.with_name(out.name + ".ckpt")
    unet = UNetConfig(side=data.image_side(cfg.dataset), channels=cfg.channels)
    images = jnp.asarray(data.to_model(data.load(cfg.dataset, "train").images))
    step = make_step(cfg, unet)
    state = initial_state(cfg, unet)
    if ckpt.is_file():
        saved = serialization.msgpack_restore(ckpt.read_bytes())
        if saved.get("config") != cfg.model_dump(mode="json"):
            raise ValueError(
                f"{ckpt}: a checkpoint of another training configuration; remove it or train with the same options"
            )
        state = serialization.from_state_dict(state, saved["state"])
    start = int(state["it"])
    losses = []
    started = time.perf_counter()
    with tqdm(total=cfg.iterations, initial=start, desc="aigc train", disable=not progress, unit="it") as bar:
        while int(state["it"]) < cfg.iterations:
            state, loss = step(state, images)
            losses.append(float(loss))
            bar.update(1)
            it = int(state["it"])
            if it % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if it % cfg.checkpoint_every == 0 and it < cfg.iterations:
                blob = {"config": cfg.model_dump(mode="json"), "state": serialization.to_state_dict(state)}
                write_bytes(ckpt, serialization.msgpack_serialize(blob))
    seconds = time.perf_counter() - started
    record = {
        "seed": cfg.seed,
        "iterations": cfg.iterations,
        "batch_size": cfg.batch_size,
        "final_loss": float(np.mean(losses[-100:])) if losses else None,
        "parameters": parameter_count(state["ema"]),
    }
    model = Model(jax.device_get(state["ema"]), unet, cfg.dataset, cfg.diffusion_steps, record)
    save(model, out)
    ckpt.unlink(missing_ok=True)
    return TrainResult(model, out, np.asarray(losses), seconds, start)
