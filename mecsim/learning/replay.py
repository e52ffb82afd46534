"""Replay ring buffers, one per agent, as a pytree with pure functions to fill and sample it.

The same functions run on the SimPy path (one replica, jitted) and inside the compiled
kernel (vmapped over replicas, inside ``lax.scan``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Replay(NamedTuple):
    """Every agent's ring buffer: rows (agents, size, ...) and the transitions stored so far per agent."""

    states: Any  # (B, M, F) float32
    actions: Any  # (B, M, k) int32: k action indices per transition (k = 1 but for a top-k head)
    rewards: Any  # (B, M) float32
    next_states: Any  # (B, M, F) float32
    count: Any  # (B,) int64


def empty(n_agents: int, size: int, n_features: int, width: int) -> Replay:
    return Replay(
        states=np.zeros((n_agents, size, n_features), np.float32),
        actions=np.zeros((n_agents, size, width), np.int32),
        rewards=np.zeros((n_agents, size), np.float32),
        next_states=np.zeros((n_agents, size, n_features), np.float32),
        count=np.zeros(n_agents, np.int64),
    )


def add(replay: Replay, agents, valid, states, actions, rewards, next_states) -> Replay:
    """Append rows to their agents' buffers (the oldest rows are overwritten when full).

    ``agents`` (n,): each row's agent; rows must be grouped by agent in ascending order with the
    valid rows first (the slots' decision order). Invalid rows are dropped.
    """
    fields = Replay._fields[:-1]  # every field but the count
    rows = dict(zip(fields, (states, actions, rewards, next_states)))
    buffers, count = add_rows({f: getattr(replay, f) for f in fields}, replay.count, agents, valid, rows)
    return Replay(**buffers, count=count)


def sample(replay: Replay, key, batch: int):
    """A minibatch per agent, drawn uniformly with replacement from its filled rows.

    Returns (states, actions, rewards, next_states) with a leading agent axis, and which agents
    have data (an agent without data gets rows of zeros and must not be updated).
    """
    size = replay.rewards.shape[-1]
    filled = jnp.minimum(replay.count, size)  # (B,)
    idx = jax.random.randint(key, (filled.shape[0], batch), 0, jnp.maximum(filled, 1)[:, None])
    rows = jnp.arange(filled.shape[0])[:, None]
    batch_rows = (
        replay.states[rows, idx],
        replay.actions[rows, idx],
        replay.rewards[rows, idx],
        replay.next_states[rows, idx],
    )
    return batch_rows, filled > 0


def add_rows(buffers: dict, count, agents, valid, rows: dict):
    """`add` for any named fields: ``buffers`` (B, M, ...) per field, ``count`` (B,), ``rows`` (n, ...) per
    field, cast to the buffers' dtypes; returns (buffers, count). Same grouping rule as `add`."""
    size = next(iter(buffers.values())).shape[1]
    n_agents = count.shape[0]
    per_agent = (jax.nn.one_hot(agents, n_agents, dtype=jnp.int32) * valid[:, None]).sum(axis=0)
    starts = jnp.cumsum(per_agent) - per_agent
    rank = jnp.arange(agents.shape[0]) - starts[agents]
    idx = jnp.where(valid, (count[agents] + rank) % size, size)  # out of range: dropped
    out = {
        name: buf.at[agents, idx].set(rows[name].astype(buf.dtype), mode="drop")
        for name, buf in buffers.items()
    }
    return out, count + per_agent


def sample_without_replacement(buffers: dict, count, key, batch: int) -> dict:
    """A minibatch per agent, ``batch`` distinct rows drawn uniformly from its filled rows (fewer filled
    rows than ``batch``: some repeat; such an agent must not be updated)."""
    size = next(iter(buffers.values())).shape[1]
    filled = jnp.minimum(count, size)  # (B,)
    scores = jax.random.uniform(key, (count.shape[0], size))
    scores = jnp.where(jnp.arange(size) < filled[:, None], scores, -1.0)  # unfilled rows come last
    idx = top_indices(scores, batch)
    idx = jnp.minimum(idx, jnp.maximum(filled, 1)[:, None] - 1)
    rows = jnp.arange(count.shape[0])[:, None]
    return {name: buf[rows, idx] for name, buf in buffers.items()}


PRESELECT_MARGIN = 8  # extra float32 candidates kept by `top_indices` beyond the k it returns


def top_indices(scores, k: int):
    """``jax.lax.top_k(scores, k)[1]`` for float64 ``scores`` (..., n), computed cheaply.

    XLA's CPU top-k of float64 is a full sort whose comparator is called per pair (about 1 ms for 5 x 1000
    scores); for float32 it has a fast selection. So: the k + `PRESELECT_MARGIN` largest of the scores
    rounded to float32 (rounding keeps their order, only merging neighbours), then the exact float64
    order among those few (stable: ties by lower index, as top-k). The result is top-k's unless more than
    `PRESELECT_MARGIN` scores share the float32 value of the k-th largest (uniform scores: below 1e-40
    per draw).
    """
    n = scores.shape[-1]
    if k + PRESELECT_MARGIN >= n or scores.dtype == jnp.float32:
        return jax.lax.top_k(scores, k)[1]
    _, candidates = jax.lax.top_k(scores.astype(jnp.float32), k + PRESELECT_MARGIN)  # by index on ties
    exact = jnp.take_along_axis(scores, candidates, axis=-1)
    order = jnp.argsort(-exact, axis=-1, stable=True)[..., :k]
    return jnp.take_along_axis(candidates, order, axis=-1)
