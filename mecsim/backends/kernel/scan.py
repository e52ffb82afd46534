"""The kernel: the slotted model's equations scanned over a replica's tasks, vmapped over replicas.

It runs the pure functions of `mecsim.models.slotted` and `mecsim.allocation` with
``xp = jax.numpy`` in float64, so it computes exactly the equations of the Python path:
each task slot in reference order (slot, BS, task slot index) asks a JAX-native policy
for a decision, gets its make-span and is committed to the state; ``end_slot`` drains
the queues after each slot. Per-task outputs (raw make-span, failed, reward, subset,
fractions, the policy's aux) come back in decision order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ...jaxconfig import jit
from ...models import slotted
from ...streams import stream_seed
from .layout import Tasks
from .shape import Env, JaxPolicy, KernelContext, KernelTask, SlotView, Spec, context

PREPARE_KEY = 1 << 30  # fold-in index of a slot's `prepare` key (task keys use their position < 2^30)


class Outputs(NamedTuple):
    """Per entry: raw make-span, failed, reward, subset, fractions, and the policy's aux (or None)."""

    span: Any
    failed: Any
    reward: Any
    subset: Any
    fractions: Any
    aux: Any = None


def _select(flag, new, old):
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


def task_key(key, slot, pos):
    return jax.random.fold_in(jax.random.fold_in(key, slot), pos)


def task_step(
    ctx: KernelContext, decide: Callable, params, key, state: slotted.SlotState, x: Tasks, prepared=None
):
    """One entry: the decision, its make-span and the state update (padding leaves the state alone).

    With faults the policy sees the terms of the context it is given for the slot (`KernelContext.at_slot`),
    while the make-span and the state follow the true speeds.
    """
    p, seen = ctx.at_slot(x.slot)
    wait, duration, split_duration = slotted.delay_terms(
        state, x.bs, x.size, x.density, seen.p, jnp, x.result
    )
    task = KernelTask(
        x.valid,
        x.slot,
        x.pos,
        x.bs,
        x.task,
        x.size,
        x.density,
        wait,
        duration,
        split_duration,
        prepared,
        x.result,
    )
    decision = decide(params, task_key(key, x.slot, x.pos), state, task, seen)
    subset, fractions = (jnp.asarray(a, wait.dtype) for a in decision[:2])
    aux = decision[2] if len(decision) > 2 else None
    if seen.p is not p:  # hidden faults: the outcome follows the true speeds
        wait, duration, split_duration = slotted.delay_terms(state, x.bs, x.size, x.density, p, jnp, x.result)
    span = slotted.makespan(wait, duration, split_duration, subset, fractions, p, jnp)
    new, span, failed, reward = slotted.commit_task(
        state, x.bs, x.size, x.density, subset, fractions, span, p, jnp
    )
    return _select(x.valid, new, state), Outputs(span, failed, reward, subset, fractions, aux)


def initial_carry(n_bs: int):
    """(SlotState at the start of an episode, work served so far)."""
    zeros = jnp.zeros(n_bs)
    return slotted.SlotState(zeros, zeros, zeros), zeros


def episode_flat(spec: Spec, policy: JaxPolicy, env: Env, params, key, tasks: Tasks):
    """One episode over flat entries: returns (outputs (length,), (final state, served work (B,)))."""
    ctx = context(spec, env)

    def body(carry, x):
        state, served = carry
        state, out = task_step(ctx, policy.decide, params, key, state, x)
        drained, work = slotted.end_slot(state, ctx.at_slot(x.slot)[0], jnp)
        state = _select(x.end, drained, state)
        served = served + jnp.where(x.end, work, 0.0)
        return (state, served), out

    carry, out = lax.scan(body, initial_carry(spec.n_bs), tasks)
    return out, carry


def slot_step(spec: Spec, policy: JaxPolicy, env: Env, params, key, carry, tasks: Tasks, t):
    """Nested layout: every entry of slot ``t`` (arrays of length ``spec.length``), then the end-of-slot drain."""
    ctx = context(spec, env)
    state, served = carry
    prepared = None
    if policy.prepare is not None:
        view = SlotView(tasks.valid, tasks.bs, tasks.task, tasks.size, tasks.density, tasks.result, t)
        prepared = policy.prepare(params, task_key(key, t, PREPARE_KEY), state, view, ctx.at_slot(t)[1])

    def body(state, xs):
        x, row = xs
        return task_step(ctx, policy.decide, params, key, state, x, row)

    state, out = lax.scan(body, state, (tasks, prepared))
    state, work = slotted.end_slot(state, ctx.at_slot(t)[0], jnp)
    return (state, served + work), out


def episode_nested(spec: Spec, policy: JaxPolicy, env: Env, params, key, tasks: Tasks):
    """One episode over nested entries (T, width): returns (outputs (T, width), (final state, served work))."""

    def body(carry, xs):
        slot_tasks, t = xs
        return slot_step(spec, policy, env, params, key, carry, slot_tasks, t)

    carry, out = lax.scan(body, initial_carry(spec.n_bs), (tasks, jnp.arange(spec.decision_slots)))
    return out, carry


@dataclass(frozen=True)
class MethodOf:
    """A bound method that compares by its owner's value. A bound method compares its owner by identity,
    so each scheduler instance's equal policy object would trace, lower and load its own kernel (in a
    sweep, every cell's greedy evaluation: about 0.35 s each, more than running it)."""

    owner: Any
    name: str

    def __call__(self, *args, **kwargs):
        return getattr(self.owner, self.name)(*args, **kwargs)


def by_value(fn: Callable | None) -> Callable | None:
    """``fn``, or a `MethodOf` where it is a method bound to a hashable instance (compared by value)."""
    owner = getattr(fn, "__self__", None)
    if owner is None or isinstance(owner, type):
        return fn
    try:
        hash(owner)
    except TypeError:
        return fn
    return MethodOf(owner, fn.__name__)


def static_policy(policy: JaxPolicy) -> JaxPolicy:
    """The hashable part of a policy (its functions); params travel as arguments. Methods of equal policy
    objects compare equal, so that they share compiled kernels."""
    return JaxPolicy(by_value(policy.decide), None, policy.batched_params, by_value(policy.prepare))


@lru_cache(maxsize=64)
def compiled_episodes(spec: Spec, policy: JaxPolicy, layout: str):
    """Jitted ``(env, params, keys, tasks) -> (outputs, (state, served))``, vmapped over replicas."""
    fn = partial(episode_flat if layout == "flat" else episode_nested, spec, policy)
    return jit(jax.vmap(fn, in_axes=(0, 0 if policy.batched_params else None, 0, 0)))


@lru_cache(maxsize=64)
def compiled_slots(spec: Spec, policy: JaxPolicy):
    """Jitted per-slot kernel ``(env, params, keys, carry, tasks, t) -> (carry, outputs)``, vmapped over replicas.

    ``tasks`` holds every slot (R, T, width); slot ``t`` is picked inside the compiled call.
    """

    def one(env, params, key, carry, tasks, t):
        slot_tasks = jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, t, keepdims=False), tasks)
        return slot_step(spec, policy, env, params, key, carry, slot_tasks, t)

    return jit(
        jax.vmap(one, in_axes=(0, 0 if policy.batched_params else None, 0, 0, 0, None)), donate_argnums=(3,)
    )


def policy_key(seed: int, episode: int, stream: str = "arrivals") -> np.ndarray:
    """Raw PRNG key data of a policy for one episode: from the seed's scheduler stream and the episode
    (and the arrival stream's name, when it is not the default one)."""
    index = (episode,) if stream == "arrivals" else (episode, zlib.crc32(stream.encode()) & 0x7FFFFFFF)
    return raw_key(stream_seed(seed, "scheduler", *index))


def raw_key(seed: int) -> np.ndarray:
    """``jax.random.key_data(jax.random.PRNGKey(seed))`` for a 32-bit ``seed``, computed on the host.

    A JAX call here would wait for the compiled call in flight (the CPU device runs them in order), so the
    host could not prepare the next episode while the current one runs. JAX's threefry key of a seed
    below 2**32 is the pair (high word 0, the seed); other generators go through JAX."""
    if jax.config.jax_default_prng_impl != "threefry2x32" or not 0 <= seed < 1 << 32:
        return np.asarray(jax.random.key_data(jax.random.PRNGKey(seed)))
    return np.array([0, seed], dtype=np.uint32)
