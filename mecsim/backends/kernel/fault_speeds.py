"""An episode's fault realisation (`mecsim.faults.Profile`) as arrays the compiled event model can use.

Each target's speed factor is piecewise constant. How long work takes under it is computed
segment by segment, with the same arithmetic in the same order as `Profile.finish` and
`Profile.done` (a closed form through the cumulative work differs in the last bits, and a
backlog that should be exactly 0 then tips a scheduler's ties the other way).

Random fault processes are drawn as far as ``until`` only (the realisation beyond it is not
known yet), so every finish time the kernel computes is checked against ``until``: a later one
sets the event model's overflow flag and the episode is run again with a profile drawn further
(`event_episode.until_it_fits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ...faults import Profile

TARGETS = ("server", "link")
SERVER, LINK = 0, 1


class FaultSpeeds(NamedTuple):
    """One replica's realisation: per target kind (server, link) and ES, the segment starts and the factor
    over each segment, (2, B, K), padded with +inf starts; and how far it is drawn."""

    breaks: Any
    factor: Any
    until: Any  # () how far the realisation is drawn (+inf: fixed windows only)


def realisation(profile: Profile, n_bs: int, until: float) -> list[list[tuple[list[float], list[float]]]]:
    """(breaks, factors) per kind and ES, drawn at least as far as ``until``."""
    return [[profile.segments(kind, i, until) for i in range(n_bs)] for kind in TARGETS]


def stack(profiles: Sequence[Profile], n_bs: int, untils: Sequence[float]) -> FaultSpeeds:
    """The replicas' realisations, each drawn to its ``until``, as stacked arrays (R, 2, B, K), K a power
    of two."""
    drawn = [realisation(p, n_bs, until) for p, until in zip(profiles, untils)]
    longest = max(len(breaks) for replica in drawn for kind in replica for breaks, _ in kind)
    k = 1 << max(longest - 1, 3).bit_length()
    shape = (len(profiles), 2, n_bs, k)
    breaks, factor = np.full(shape, np.inf), np.ones(shape)
    for r, replica in enumerate(drawn):
        for kind, targets in enumerate(replica):
            for i, (starts, factors) in enumerate(targets):
                breaks[r, kind, i, : len(starts)] = starts
                factor[r, kind, i, : len(starts)] = factors
    # fixed windows are known for all time: nothing to check them against
    reach = [np.inf if not p.faults.processes else until for p, until in zip(profiles, untils)]
    return FaultSpeeds(breaks, factor, np.asarray(reach, float))


def _segment(breaks, t):
    """The segment holding instant ``t`` (any shape), as ``bisect_right(breaks, t) - 1``."""
    return jnp.clip(jnp.searchsorted(breaks, t, side="right") - 1, 0, breaks.shape[0] - 1)


def _segment_end(breaks, first, i):
    """Where the ``i``-th segment from segment ``first`` ends (+inf past the last start), and its index."""
    k = breaks.shape[0]
    j = jnp.minimum(first + i, k - 1)
    return jnp.where(first + i + 1 < k, breaks[jnp.minimum(j + 1, k - 1)], jnp.inf), j


def _finish_one(breaks, factor, speed, start, amount):
    """`Profile.finish` of one target (arrays (K,)): through the segments from ``start``'s on."""
    k = breaks.shape[0]
    first = _segment(breaks, start)

    def step(i, carry):
        t, left, found = carry
        end, j = _segment_end(breaks, first, i)
        rate = speed * factor[j]
        up = rate > 0.0
        candidate = t + left / jnp.where(up, rate, 1.0)
        hit = jnp.isnan(found) & (first + i < k) & up & (candidate <= end)
        found = jnp.where(hit, candidate, found)
        return end, left - rate * (end - t), found

    _, _, found = lax.fori_loop(0, k, step, (start, amount, jnp.full(jnp.shape(start), jnp.nan)))
    return jnp.where(amount > 0.0, jnp.where(jnp.isnan(found), jnp.inf, found), start)


def _done_one(breaks, factor, speed, start, now):
    """`Profile.done` of one target: the work done from ``start`` to ``now``, segment by segment."""
    k = breaks.shape[0]
    first = _segment(breaks, start)

    def step(i, carry):
        t, total = carry
        going = t < now
        end, j = _segment_end(breaks, first, i)
        end = jnp.minimum(end, now)
        total = jnp.where(going, total + speed * factor[j] * (end - t), total)
        return jnp.where(going, end, t), total

    return lax.fori_loop(0, k, step, (start, jnp.zeros(jnp.shape(start))))[1]


def _per_es(fn, speeds: FaultSpeeds, kind: int, speed, *args):
    """``fn`` of each ES's own target arrays and nominal speed, over arguments with the ES on their leading
    axis."""
    return jax.vmap(fn)(speeds.breaks[kind], speeds.factor[kind], speed, *args)


def factor_at(speeds: FaultSpeeds, kind: int, t):
    """(B,) each target's factor at instant ``t`` (a scalar), as `Profile.factor_at`."""
    return jax.vmap(lambda breaks, factor: factor[_segment(breaks, t)])(
        speeds.breaks[kind], speeds.factor[kind]
    )


def done(speeds: FaultSpeeds, kind: int, speed, start, now):
    """Work done between ``start`` and ``now`` (ES on the leading axis) at nominal ``speed`` (B,)."""
    return _per_es(_done_one, speeds, kind, speed, start, now)


def finish(speeds: FaultSpeeds, kind: int, speed, start, amount):
    """(B,) when ``amount`` started at ``start`` at nominal ``speed`` is done (``start`` for no amount)."""
    return _per_es(_finish_one, speeds, kind, speed, start, amount)


def beyond(speeds: FaultSpeeds, times, mask):
    """Whether any of ``times`` (where ``mask``) lies past the drawn realisation."""
    return jnp.any(mask & (times > speeds.until))
