"""What a compiled kernel is specialised on, and what a JAX-native policy sees.

* `Spec` — the static shape of a replica group (B, N, slots, allocation rule, the
  accounting variant, the scan length): one compiled kernel per Spec;
* `Env` — the per-replica scenario numbers (capacities, rates, slot length, deadline,
  failure penalty, N) that may differ between vmapped replicas;
* `JaxPolicy` — a scheduler's JAX-native form; `KernelTask`, `SlotView` and
  `KernelContext` — what its functions receive.

A policy's ``decide`` is pure:

    decide(params, key, state, task, ctx) -> (subset (B,), fractions (B,)[, aux])

``params`` is a pytree, ``key`` a PRNG key for this task, ``state`` the `SlotState` the
task sees (``state.backlog`` is the start-of-slot backlog Q(t), the reference
observation), ``task`` a `KernelTask` (arrival fields, delay terms on every server, and
the row of ``prepare``'s output if the policy has one), ``ctx`` a `KernelContext`
(``ctx.evaluate(task)`` for every subset, ``ctx.allocate(task, subset)`` for the scenario's
rule). The optional ``aux`` (e.g. an action index) is returned per task. ``decide`` (and
``prepare``) must be module-level functions or hashable objects that compare equal across
calls, so that compiled kernels are reused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import jax.numpy as jnp

from ...allocation import allocate, allocate_usable, subset_masks
from ...config import EnvVariant, Scenario
from ...models import slotted
from ...scheduling import MAX_SUBSET_BS


# -- what a policy sees ----------------------------------------------------------------------------
class KernelTask(NamedTuple):
    """One task slot, as a policy sees it (scalars, and (B,) delay terms)."""

    valid: Any  # False for padding (the decision is discarded)
    slot: Any  # slot index t
    pos: Any  # position of the task within its slot (0, 1, ...; reference order)
    bs: Any  # arrival BS b
    task: Any  # task slot index n
    size: Any  # Mbit
    density: Any  # Gcycles/Mbit
    wait: Any  # (B,) seconds, as `slotted.delay_terms`
    duration: Any
    split_duration: Any
    prepared: Any = None  # this task's row of the policy's `prepare` output (nested layout)
    result: Any = None  # Mbit downloaded from the servers (None: no downloads)
    tx_backlog: Any = None  # event model: (B,) seconds until the link towards each server is free
    current_backlog: Any = None  # event model: (B,) Gcycles at each ES now, this slot's decisions in


class SlotView(NamedTuple):
    """The compacted task slots of one slot (arrays of length ``width``), for a policy's ``prepare``."""

    valid: Any
    bs: Any
    task: Any
    size: Any
    density: Any
    result: Any = None
    slot: Any = None  # the slot index t


@dataclass(frozen=True)
class KernelContext:
    """Scenario-level helpers for policies, valid inside the compiled kernel."""

    p: slotted.SlottedParams
    rule: str
    masks: Any  # (2^B - 1, B) every non-empty subset (`subset_masks` order); None for B > MAX_SUBSET_BS
    n_bs: int
    tasks_per_slot: int = 0  # N: task slots per BS and slot (``SlotView.task`` < N)
    speed: Any = None  # faults: (T, 2, B) per-slot factors of the capacities and rates (`Env.speed`)
    observable: bool = True  # faults: policies see the current speeds (else the nominal ones)

    def at_slot(self, t) -> tuple[slotted.SlottedParams, KernelContext]:
        """Slot ``t``'s true parameters, and the context policies see then (faults scale the speeds)."""
        if self.speed is None:
            return self.p, self
        factors = self.speed[t]
        true = self.p._replace(capacities=self.p.capacities * factors[0], rates=self.p.rates * factors[1])
        return true, (replace(self, p=true) if self.observable else self)

    def evaluate(self, task: KernelTask, masks=None, rule: str | None = None):
        """Fractions (K, B) and make-spans (K,) of candidate subsets (default: all), like `Observation.evaluate`."""
        if masks is None and self.masks is None:
            raise ValueError(
                f"evaluating every subset of B = {self.n_bs} servers ({2**self.n_bs - 1} subsets) is refused; "
                f"B <= {MAX_SUBSET_BS} allowed, or give the candidate masks"
            )
        masks = self.masks if masks is None else masks
        return slotted.evaluate_subsets(
            task.wait, task.duration, task.split_duration, masks, rule or self.rule, self.p, jnp
        )

    def allocate(self, task: KernelTask, subset):
        """Fractions over ``subset`` under the scenario's rule on the true state (a singleton gets x = 1)."""
        rule = allocate_usable if self.p.outages else allocate
        shares = rule(self.rule, task.wait, task.split_duration, subset[None, :], jnp)[0]
        return jnp.where(subset.sum() == 1, subset, shares)


@dataclass(frozen=True)
class JaxPolicy:
    """A scheduler's JAX-native form.

    ``decide``: per task, see the module docstring. ``params``: its pytree (with a leading
    replica axis when ``batched_params``). ``prepare``: optional
    ``prepare(params, key, state, slot: SlotView, ctx) -> pytree (width, ...)`` evaluated once
    per slot from the start-of-slot state; row j reaches ``decide`` as ``task.prepared``.
    """

    decide: Callable
    params: Any = None
    batched_params: bool = False
    prepare: Callable | None = None


# -- static shape and dynamic scenario arrays ------------------------------------------------------
class Env(NamedTuple):
    """The per-replica numbers that may differ between vmapped replicas."""

    capacities: Any
    rates: Any
    slot_length: Any
    deadline: Any
    fail_penalty: Any
    tasks_per_slot: Any  # this replica's N (the compiled shape may be larger: padding task slots)
    speed: Any = None  # faults: (T, 2, B) mean factors of capacities and rates per slot (`mecsim.faults`)
    profile: Any = None  # faults, event model: the realisation itself (`fault_speeds.FaultSpeeds`)


@dataclass(frozen=True)
class Spec:
    """What a compiled kernel is specialised on (hashable); ``length`` is the scan length per slot or episode."""

    n_bs: int
    tasks_per_slot: int
    decision_slots: int
    allocation: str
    variant: EnvVariant  # the accounting flags (`EnvVariant.structural`: the penalty is per replica)
    length: int = 0
    faults: bool = False  # the replicas have faults: per-slot speeds, guarded equations
    observable: bool = True  # faults: policies see the current speeds
    downloads: bool = False  # tasks carry a result downloaded from the servers
    model: str = "slotted"  # the delay model: "slotted" or "event" (`kernel.event`)
    deadline_policy: str = "keep"  # event model: keep or drop work past its deadline
    link_topology: str = "pair"  # event model: one link per (source, destination), or per destination
    window: int = 0  # event model, "drop": how many earlier slots' work can still count in the backlog

    @classmethod
    def from_scenario(cls, scenario: Scenario, length: int = 0) -> Spec:
        event = scenario.model == "event"
        return cls(
            scenario.n_bs,
            scenario.tasks_per_slot,
            scenario.decision_slots,
            scenario.allocation,
            scenario.variant.structural(),
            int(length),
            scenario.faults.active,
            scenario.faults.observable,
            scenario.result_range is not None,
            scenario.model,
            scenario.deadline_policy if event else "keep",
            scenario.link_topology if event else "pair",
            drop_window(scenario) if event else 0,
        )

    def with_length(self, length: int) -> Spec:
        return replace(self, length=int(length))

    @classmethod
    def of_group(cls, scenarios: Sequence[Scenario]) -> Spec:
        """The shape shared by ``scenarios``, with the largest N (smaller ones are padded); raises
        ValueError when they differ in anything else static."""
        specs = {cls.from_scenario(sc) for sc in scenarios}
        n_max = max(s.tasks_per_slot for s in specs)
        window = max(s.window for s in specs)  # "drop": the longest deadline sets how far back to look
        padded = {replace(s, tasks_per_slot=n_max, window=window) for s in specs}
        if len(padded) != 1:
            raise ValueError(
                "replicas of one kernel call must share B, slots, the allocation rule and the flags"
            )
        return padded.pop()


def drop_window(scenario: Scenario) -> int:
    """Event model, "drop": how many earlier slots' work can still count in the observed backlog (their
    deadline not yet passed), 0 under "keep"."""
    if scenario.deadline_policy != "drop":
        return 0
    return min(math.ceil(scenario.deadline_s / scenario.slot_length) + 1, scenario.decision_slots)


def env_of(scenario: Scenario) -> Env:
    p = slotted.SlottedParams.from_scenario(scenario)
    numbers = {name: getattr(p, name) for name in slotted.NUMBERS}
    return Env(
        **{k: v if k in ("capacities", "rates") else float(v) for k, v in numbers.items()},
        tasks_per_slot=float(scenario.tasks_per_slot),
    )


def slotted_params(spec: Spec, env: Env) -> slotted.SlottedParams:
    """`SlottedParams` with the static variant of ``spec`` and (possibly traced) numbers from ``env``."""
    return slotted.SlottedParams.build(
        spec.n_bs, spec.variant, jnp, outages=spec.faults, **{k: getattr(env, k) for k in slotted.NUMBERS}
    )


def context(spec: Spec, env: Env) -> KernelContext:
    masks = jnp.asarray(subset_masks(spec.n_bs)) if spec.n_bs <= MAX_SUBSET_BS else None
    return KernelContext(
        slotted_params(spec, env),
        spec.allocation,
        masks,
        spec.n_bs,
        spec.tasks_per_slot,
        env.speed,
        spec.observable,
    )
