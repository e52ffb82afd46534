"""The slotted delay model: the reference's per-task accounting as pure array functions.

State per slot (spec §1.3): ``backlog`` Q(t), the backlog at the start of the slot;
``assigned`` Q'(t), work assigned during the slot so far; ``tau`` τ_b(t), the upload
time already committed by each source BS during the slot. All in Gcycles or seconds.

A task at BS ``b`` with size ``d`` (Mbit) and density ``rho`` (Gcycles/Mbit) sees, for each
server i (spec §1.4):

    wait W_i      = (Q_i + Q'_i)/f_i  (+ τ_b if i is remote and ``remote_wait_includes_tau``,
                    or for every server when ``local_wait_includes_tau``), clipped to the
                    deadline when ``wait_clip_to_deadline``
    duration D_i  = d·ρ/f_i (+ d/r_i if remote)            -- the whole task alone on i
                    (+ res/r_i, the result download, for a task with a result of res Mbit:
                    remote servers, and the local one when ``local_download``; spec §6.1)
    split D_i     = D_i (+ d/r_b for the local server when ``local_upload_in_split``)

A decision is a ``subset`` mask and ``fractions``. With one member the make-span is
W_i + D_i; with more it is max over members of W_i + x_i·D_i (split durations), the
members including zero-fraction ones when ``makespan_counts_idle`` (the reference).

Every function is pure and takes the array namespace ``xp``, so the compiled kernel
(`jax.numpy`, `lax.scan` over tasks) runs exactly these equations.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..allocation import allocate, allocate_usable, finish_times
from ..config import EnvVariant, Scenario


class SlotState(NamedTuple):
    backlog: np.ndarray  # Q(t), Gcycles, at the start of the slot
    assigned: np.ndarray  # Q'(t), Gcycles assigned during the slot so far
    tau: np.ndarray  # τ_b(t), seconds of upload committed by each source BS this slot


class SlottedParams(NamedTuple):
    """Parameters of the slotted model: numbers (arrays for f and r) and the accounting ``variant``.

    The failure penalty is a number of its own (the compiled kernel varies it per replica);
    the equations read it here, never from ``variant``.
    """

    capacities: np.ndarray
    rates: np.ndarray
    slot_length: float
    deadline: float
    fail_penalty: float
    variant: EnvVariant
    local_masks: np.ndarray  # (B, B) bool, row b: the local server of BS b
    remote_masks: np.ndarray  # (B, B) 0/1 floats, row b: the servers remote from BS b
    outages: bool = False
    """Capacities or rates may be 0 (faults): a term that would divide by 0 is +inf, and infinite
    terms are kept out of products with 0 (a fault-free run takes the plain arithmetic)."""

    @classmethod
    def build(cls, n_bs: int, variant: EnvVariant, xp=np, outages: bool = False, **numbers) -> SlottedParams:
        """Parameters from the variant and the `NUMBERS` (arrays of ``xp``, or values traced by JAX)."""
        eye = np.eye(n_bs)
        return cls(
            variant=variant,
            local_masks=xp.asarray(eye > 0),
            remote_masks=xp.asarray(1.0 - eye),
            outages=outages,
            **numbers,
        )

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> SlottedParams:
        return cls.build(
            scenario.n_bs,
            scenario.variant,
            capacities=np.asarray(scenario.capacities, dtype=float),
            rates=np.asarray(scenario.rates, dtype=float),
            slot_length=scenario.slot_length,
            deadline=scenario.deadline_s,
            fail_penalty=scenario.variant.fail_penalty,
            outages=scenario.faults.active,
        )


NUMBERS = ("capacities", "rates", "slot_length", "deadline", "fail_penalty")
"""The fields of `SlottedParams` that are numbers (the compiled kernel may vary them per replica)."""


def _guarded_arithmetic(xp):
    """(divide, mask) under outages: a division by 0 gives +inf (nothing moves there) and
    masking is a select, so that inf·0 never turns into NaN. Without outages they are the plain
    ufuncs divide and multiply (``mask(v, m)`` = v·m for a 0/1 mask m).
    """

    def divide(numerator, denominator):
        up = denominator > 0
        return xp.where(up, numerator / xp.where(up, denominator, 1.0), xp.inf)

    def mask(value, mask):
        return xp.where(mask > 0, value, 0.0)

    return divide, mask


def initial_state(n_servers: int, xp=np) -> SlotState:
    zeros = xp.zeros(n_servers)
    return SlotState(zeros, zeros, zeros)


def delay_terms(state: SlotState, b, size, density, p: SlottedParams, xp=np, result=None):
    """(wait, duration, split_duration) of the task on every server, each of shape (B,).

    Broadcasts over a leading task axis: ``b``, ``size``, ``density`` (and ``result``) of shape
    (n,) and state fields of shape (n, B) give terms of shape (n, B). Masking is by exact 0/1
    products, so the scalar and batched forms give identical bits. ``result``: the result size
    (Mbit) downloaded from the servers, or None for a scenario without downloads.
    """
    remote = p.remote_masks[b]
    divide, mask = _guarded_arithmetic(xp) if p.outages else (xp.divide, xp.multiply)
    if getattr(b, "ndim", 0):  # a batch of tasks
        tau_b = xp.take_along_axis(state.tau, xp.asarray(b)[:, None], axis=-1)
        size, work = size[:, None], (size * density)[:, None]
        result = None if result is None else result[:, None]
    else:
        tau_b, work = state.tau[b], size * density
    variant = p.variant
    wait = divide(state.backlog + state.assigned, p.capacities)
    if variant.local_wait_includes_tau:
        wait = wait + tau_b
    elif variant.remote_wait_includes_tau:
        wait = wait + mask(tau_b, remote)
    if variant.wait_clip_to_deadline:
        wait = xp.minimum(wait, p.deadline)
    compute = divide(work, p.capacities)
    upload = divide(size, p.rates)
    if result is not None:
        download = divide(result, p.rates)
        compute = compute + (download if variant.local_download else mask(download, remote))
    duration = compute + mask(upload, remote)
    split_duration = compute + upload if variant.local_upload_in_split else duration
    return wait, duration, split_duration


def makespan(wait, duration, split_duration, subset, fractions, p: SlottedParams, xp=np):
    """Make-span of one decision (raw, before the deadline cap); broadcasts over a leading task axis.

    A one-server decision runs the whole task (x = 1) with the unsplit duration.
    """
    single = subset.sum(axis=-1, keepdims=True) == 1
    fractions = xp.where(single, subset, fractions)
    if split_duration is not duration:
        duration = xp.where(single, duration, split_duration)
    return finish_times(wait, duration, fractions, subset, p.variant.makespan_counts_idle, xp, p.outages)


def apply_task(state: SlotState, b, size, density, subset, fractions, p: SlottedParams, xp=np, result=None):
    """Execute one decision: returns (new state, raw make-span, failed, reward)."""
    wait, duration, split_duration = delay_terms(state, b, size, density, p, xp, result)
    span = makespan(wait, duration, split_duration, subset, fractions, p, xp)
    return commit_task(state, b, size, density, subset, fractions, span, p, xp)


def commit_task(state: SlotState, b, size, density, subset, fractions, span, p: SlottedParams, xp=np):
    """State update after a decision whose raw make-span is ``span`` (spec §1.4, last steps)."""
    failed = span > p.deadline
    divide, mask = _guarded_arithmetic(xp) if p.outages else (xp.divide, xp.multiply)
    # fractions are 0 outside the subset, so only under outages (inf rates·0) does it need masking
    upload = mask(divide(fractions * size, p.rates), fractions) if p.outages else fractions * size / p.rates
    tau_b = state.tau[b] + (upload if p.variant.tau_counts_local else mask(upload, p.remote_masks[b])).sum()
    work = fractions * (size * density)
    if not p.variant.enqueue_failed_work:
        tau_b = xp.where(failed, state.tau[b], tau_b)
        work = xp.where(failed, 0.0, work)
    if p.variant.tau_clamp == "always":
        tau_b = xp.minimum(tau_b, p.slot_length)
    elif p.variant.tau_clamp == "multi":
        tau_b = xp.where(subset.sum() > 1, xp.minimum(tau_b, p.slot_length), tau_b)
    tau = xp.where(p.local_masks[b], tau_b, state.tau)
    reward = xp.where(failed, -p.fail_penalty * p.deadline, -span)
    return SlotState(state.backlog, state.assigned + work, tau), span, failed, reward


def apply_slot(state: SlotState, b, size, density, subsets, fractions, p: SlottedParams, result=None):
    """All decisions of one slot at once (NumPy), bit-identical to `apply_task` in a loop.

    Valid when every decision carries explicit fractions, failed work is enqueued and no
    τ clamp binds; returns None otherwise so the caller falls back to the task loop.
    Running sums are formed left to right exactly as the loop adds them.
    """
    if not p.variant.enqueue_failed_work or p.outages:
        return None
    work = fractions * (size * density)[:, None]
    assigned = np.cumsum(np.vstack([state.assigned, work]), axis=0)
    upload = fractions * size[:, None] / p.rates
    upload = (upload if p.variant.tau_counts_local else upload * p.remote_masks[b]).sum(axis=1)
    tau = np.cumsum(np.vstack([state.tau, np.where(p.local_masks[b], upload[:, None], 0.0)]), axis=0)
    if p.variant.tau_clamp != "none" and np.any(tau > p.slot_length):
        return None
    before = SlotState(state.backlog, assigned[:-1], tau[:-1])
    wait, duration, split_duration = delay_terms(before, b, size, density, p, result=result)
    span = makespan(wait, duration, split_duration, subsets, fractions, p)
    failed = span > p.deadline
    reward = np.where(failed, -p.fail_penalty * p.deadline, -span)
    return SlotState(state.backlog, assigned[-1], tau[-1]), span, failed, reward


def end_slot(state: SlotState, p: SlottedParams, xp=np):
    """Fluid drain at the end of a slot (spec §1.5): returns (next state, work served this slot)."""
    total = state.backlog + state.assigned
    capacity = p.capacities * p.slot_length
    served = xp.minimum(total, capacity)
    zeros = xp.zeros_like(total)
    return SlotState(total - served, zeros, zeros), served


def evaluate_subsets(wait, duration, split_duration, masks, rule: str, p: SlottedParams, xp=np):
    """Fractions and make-spans of every subset in ``masks`` under an allocation rule.

    Singletons get the whole task (every rule gives them exactly x = 1) and their
    make-span uses the unsplit duration, as in the reference.
    """
    fractions = (allocate_usable if p.outages else allocate)(rule, wait, split_duration, masks, xp)
    if split_duration is not duration:
        split_duration = xp.where(masks.sum(axis=-1, keepdims=True) == 1, duration, split_duration)
    return fractions, finish_times(
        wait, split_duration, fractions, masks, p.variant.makespan_counts_idle, xp, p.outages
    )
