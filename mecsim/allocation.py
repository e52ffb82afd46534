"""Workload allocation over a subset of edge servers (reference spec §2).

Every rule works on a whole matrix of candidate subsets at once: ``masks`` has shape
(K, B) with 1 where server i belongs to subset k; ``wait`` and ``duration`` have shape
(B,) (or broadcast against masks). A fraction x_i assigned to server i is modelled as
finishing at ``wait_i + x_i * duration_i``.

The functions are pure and take the array namespace ``xp`` (``numpy`` or ``jax.numpy``),
so the compiled kernel reuses them unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import cache

import numpy as np


@cache
def subset_masks(n_servers: int) -> np.ndarray:
    """All 2^B - 1 non-empty subsets as 0/1 rows, by size then lexicographically (spec §3).

    >>> subset_masks(3).astype(int).tolist()
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]]
    """
    rows = []
    for size in range(1, n_servers + 1):
        for combo in itertools.combinations(range(n_servers), size):
            row = np.zeros(n_servers)
            row[list(combo)] = 1.0
            rows.append(row)
    masks = np.array(rows)
    masks.setflags(write=False)
    return masks


def divide(numerator, denominator, xp=np):
    """``numerator / denominator`` with IEEE division also where the denominator is broadcast.

    XLA rewrites a division by a broadcast value as a multiplication by its reciprocal, which
    rounds differently (a share x/x would come out as 0.9999999999999999); the compiled kernel
    must break ties between choices as NumPy does, so the broadcast divisor is materialised
    behind an optimisation barrier.
    """
    if xp is np:
        return numerator / denominator
    import jax

    shape = xp.broadcast_shapes(xp.shape(numerator), xp.shape(denominator))
    return numerator / jax.lax.optimization_barrier(xp.broadcast_to(denominator, shape))


def cwa(wait, duration, masks, xp=np):
    """Closed-form workload allocation, faithful: solve equal finish times, clip negatives, renormalise once.

    Unconstrained solution: T = (1 + Σ W/D) / Σ 1/D and x_i = (T - W_i)/D_i (spec §2.1).
    """
    inv_d = 1.0 / duration
    member_inv_d = masks * inv_d  # 1/D_i for members, 0 elsewhere
    t_full = (1.0 + member_inv_d @ wait) / (masks @ inv_d)
    x = xp.maximum((t_full[..., None] - wait) * member_inv_d, 0.0)
    return divide(x, x.sum(axis=-1, keepdims=True), xp)


def hecwa(wait, duration, masks, xp=np):
    """High-efficiency CWA: x_i ∝ 1/D_i, ignoring waits (spec §2.2)."""
    weights = masks * (1.0 / duration)
    return divide(weights, weights.sum(axis=-1, keepdims=True), xp)


def waterfill(wait, duration, masks, xp=np):
    """Exact min-max allocation (spec §2.3): fill servers in order of increasing wait until the level T* is reached."""
    order = xp.argsort(wait, stable=True) if xp is np else xp.argsort(wait)
    w_sorted, d_sorted = wait[order], duration[order]
    m_sorted = masks[..., order]
    cum_a = xp.cumsum(m_sorted * (w_sorted / d_sorted), axis=-1)
    cum_b = xp.cumsum(divide(m_sorted, d_sorted, xp), axis=-1)
    level = (1.0 + cum_a) / xp.where(cum_b > 0, cum_b, 1.0)
    admissible = (m_sorted > 0) & (w_sorted < level)
    # the first member always qualifies; k* is the last admissible member in wait order
    first = xp.argmax(m_sorted > 0, axis=-1)
    admissible = admissible | (xp.arange(wait.shape[-1]) == first[..., None])
    last = wait.shape[-1] - 1 - xp.argmax(admissible[..., ::-1], axis=-1)
    t_star = xp.take_along_axis(level, last[..., None], axis=-1)
    x = divide(masks * xp.maximum(t_star - wait, 0.0), duration, xp)
    return divide(x, x.sum(axis=-1, keepdims=True), xp)  # sums to 1 up to rounding already; make it exact


ALLOCATORS: dict[str, Callable] = {"cwa": cwa, "hecwa": hecwa, "waterfill": waterfill}


def allocate(rule: str, wait, duration, masks, xp=np):
    """Fractions for every subset row of ``masks`` under the named rule.

    Every rule ends by dividing by the row sum, so a singleton gets exactly x = 1 (v / v).
    """
    try:
        fn = ALLOCATORS[rule]
    except KeyError:
        raise ValueError(f"allocation rule {rule!r} unknown; allowed: {', '.join(ALLOCATORS)}") from None
    return fn(wait, duration, masks, xp)


def allocate_subset(rule: str, wait, duration, subset: np.ndarray, guard: bool = False) -> np.ndarray:
    """Fractions (B,) for one 0/1 ``subset`` (NumPy); a single server takes the whole task.

    ``guard``: terms may be infinite (faults), see `allocate_usable`.
    """
    if subset.sum() == 1:
        return subset.astype(float)
    return (allocate_usable if guard else allocate)(
        rule, np.asarray(wait), np.asarray(duration), subset[None, :]
    )[0]


def allocate_members(rule: str, wait, duration, members: list[int]) -> list[float]:
    """Fractions (a list of B floats) for the subset with server indices ``members``, in plain Python.

    The event model's per-task path calls this once per task with B ≈ 5, where NumPy's
    per-call overhead outweighs the arithmetic. Same rules as `allocate` (CWA and HECWA here;
    water-filling goes through NumPy), equal to them up to rounding.
    """
    out = [0.0] * len(wait)
    if len(members) == 1:
        out[members[0]] = 1.0
        return out
    if rule == "cwa":
        inv_d = [1.0 / duration[i] for i in members]
        level = (1.0 + sum(v * wait[i] for i, v in zip(members, inv_d))) / sum(inv_d)
        x = [max((level - wait[i]) * v, 0.0) for i, v in zip(members, inv_d)]
    elif rule == "hecwa":
        x = [1.0 / duration[i] for i in members]
    else:
        subset = np.zeros(len(wait))
        subset[members] = 1.0
        return allocate_subset(rule, wait, duration, subset).tolist()
    total = sum(x)
    for i, share in zip(members, x):
        out[i] = share / total
    return out


def allocate_usable(rule: str, wait, duration, masks, xp=np):
    """`allocate` where some servers cannot take work (an infinite wait or duration: a fault).

    Only the usable members of a subset share the task; a subset without any shares it equally
    (its make-span is infinite whatever the shares).
    """
    usable = xp.isfinite(wait) & xp.isfinite(duration)
    members = xp.where(usable, masks, 0.0)
    none = members.sum(axis=-1, keepdims=True) == 0
    members = xp.where(none, masks, members)
    fractions = allocate(rule, xp.where(usable, wait, 0.0), xp.where(usable, duration, 1.0), members, xp)
    return xp.where(none, masks / masks.sum(axis=-1, keepdims=True), fractions)


def finish_times(wait, duration, fractions, masks, counts_idle: bool = True, xp=np, guard: bool = False):
    """Make-span of each subset: the latest finish over its members.

    With ``counts_idle`` (the reference's metric) a member whose fraction is 0 still
    contributes its wait; otherwise only members with positive fractions count.
    Finish times are >= 0, so masking by a 0/1 product leaves the maximum unchanged. With
    ``guard`` (terms may be infinite) masking selects instead, so that no inf·0 appears.
    """
    members = masks if counts_idle else fractions > 0
    if not guard:
        return ((wait + fractions * duration) * members).max(axis=-1)
    finish = wait + fractions * xp.where(fractions > 0, duration, 0.0)
    return xp.where(members > 0, finish, 0.0).max(axis=-1)
