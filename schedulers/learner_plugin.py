"""What the learning schedulers share: their seed, their per-episode policy key, checkpoints
(``config.json``: scheduler, B, actions, hyper-parameters, counters; ``agents.msgpack``: every
agent's networks and optimiser states), and the padding and update helpers of their SimPy path.

A scheduler mixes in `LearnerPlugin` and provides ``config`` (with ``learner_seed``),
``config_class``, ``_setup(config)``, ``n_actions``, ``_nets()`` (the pytree to save) and
``_restore(nets)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from mecsim.backends.kernel.scan import policy_key
from mecsim.jaxconfig import jit
from mecsim.results import write_bytes, write_text
from mecsim.scheduling import SchedulerError

CHECKPOINT_FORMAT = 1


def bucket(n: int) -> int:
    """A padded width for ``n`` entries (powers of two from 8), so that few sizes are compiled."""
    return max(8, 1 << (max(n, 1) - 1).bit_length())


def padded(values, width: int, fill=0) -> np.ndarray:
    values = np.asarray(values)
    out = np.full((width,) + values.shape[1:], fill, dtype=values.dtype)
    out[: values.shape[0]] = values
    return out


def _step_one_replica(step, state, learn_step):
    """``step(state, learn_step)`` vmapped over a replica axis of one, as the kernel's training loop
    calls it, so that XLA batches the update exactly as it does there and both paths take bit-identical
    steps. ``step``: a learner's bound update method (hashable: its learner is a frozen dataclass)."""
    batched = jax.tree.map(lambda a: a[None], state)
    return jax.tree.map(lambda a: a[0], jax.vmap(lambda s: step(s, learn_step))(batched))


step_one_replica = jit(_step_one_replica, static_argnums=(0,))


class LearnerPlugin:
    _key_of: tuple[int, np.ndarray | None] = (-1, None)

    @property
    def learner_seed(self) -> int:
        """Seed of the network init, replay sampling and exploration (the scenario's unless ``learner_seed``)."""
        return self.config.learner_seed if self.config.learner_seed >= 0 else self.scenario.seed

    def _episode_key(self, episode: int) -> np.ndarray:
        """The episode's policy key (the kernel's: `policy_key`), computed once per episode."""
        if self._key_of[0] != episode:
            self._key_of = (episode, policy_key(self.learner_seed, episode))
        return self._key_of[1]

    def _nets(self) -> Any:
        raise NotImplementedError

    def _restore(self, nets: Any) -> None:
        raise NotImplementedError

    def save(self, path: str) -> None:
        """Write ``config.json`` (hyper-parameters, counters) and ``agents.msgpack`` (every agent's nets)."""
        out = Path(path)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "scheduler": type(self).__module__ + ":" + type(self).__qualname__,
            "n_bs": self.n_bs,
            "n_actions": self.n_actions,
            "config": self.config.to_json(),
            "learn_step": self.learn_step,
            "slot_step": self.slot_step,
        }
        write_bytes(out / "agents.msgpack", serialization.to_bytes(self._nets()))
        write_text(out / "config.json", json.dumps(meta, indent=2))

    def load(self, path: str) -> None:
        """Restore a checkpoint written by ``save``; the network shape comes from the checkpoint.

        Refused, with the reason: a checkpoint that cannot be read, of another scheduler, for another
        number of BSs or actions, or whose networks do not fit its own configuration.
        """
        src = Path(path)
        where = f"scheduler {self.name!r}: checkpoint {str(src)!r}"
        try:
            meta = json.loads((src / "config.json").read_text())
            data = (src / "agents.msgpack").read_bytes()
        except (OSError, ValueError) as err:
            raise SchedulerError(f"{where} cannot be read: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or "config" not in meta:
            raise SchedulerError(f"{where}: config.json is not a checkpoint of format {CHECKPOINT_FORMAT}")
        mine = type(self).__module__ + ":" + type(self).__qualname__
        if meta.get("scheduler") != mine:
            raise SchedulerError(f"{where} was saved by {meta.get('scheduler')!r}, not by {mine!r}")
        if meta.get("n_bs") != self.n_bs:
            raise SchedulerError(f"{where} has {meta.get('n_bs')} agents, scenario has {self.n_bs} BSs")
        self._setup(self.config_class.from_options(self.name, meta["config"]))
        if self.n_actions != meta.get("n_actions"):
            raise SchedulerError(f"{where} has {meta.get('n_actions')} actions, expected {self.n_actions}")
        try:
            restored = serialization.from_bytes(self._nets(), data)
            leaves = zip(jax.tree.leaves(self._nets()), jax.tree.leaves(restored))
            if any(np.shape(a) != np.shape(b) for a, b in leaves):
                raise ValueError("the network shapes differ from its config.json")
        except Exception as err:  # noqa: BLE001 - whatever a damaged file makes msgpack or flax raise
            raise SchedulerError(f"{where} does not fit: {type(err).__name__}: {err}") from None
        self._restore(jax.tree.map(jnp.asarray, restored))
        self.learn_step = int(meta.get("learn_step", 0))
        self.slot_step = int(meta.get("slot_step", 0))
