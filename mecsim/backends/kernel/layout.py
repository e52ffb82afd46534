"""Compacted task slots (host side): the arrays a kernel scans over, and their lengths.

Empty task slots (about 70 % of them at p = 0.3) are compacted away. Two layouts of the
same scan:

* ``flat`` (default for whole episodes): the episode's tasks in decision order; a task
  carries an end-of-slot flag, and a slot without tasks becomes one padding entry that
  only ends the slot. Padding is only what separates the replicas' task counts.
* ``nested``: (slots, width), each slot's tasks first, padded to the largest slot. Needed
  for per-slot stepping and for policies that prepare a whole slot at once.

Replicas with fewer task slots per BS than the group's largest N are padded with task
slots that never hold a task (the decision order of the real ones is unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ...arrivals import Trace
from ...config import Scenario

PAD_SIZE = 1.0  # size of a padding entry: any positive value keeps the padded arithmetic finite


class Tasks(NamedTuple):
    """Compacted task entries, decision order along the last axis (or the last two, nested).

    ``end`` marks the entry after which the slot ends (flat layout only; all False nested).
    """

    valid: np.ndarray
    end: np.ndarray
    slot: np.ndarray
    pos: np.ndarray
    bs: np.ndarray
    task: np.ndarray
    size: np.ndarray
    density: np.ndarray
    result: np.ndarray | None = None  # Mbit downloaded from the servers (None: no downloads)


_SIZES: dict[tuple, list[int]] = {}  # compiled scan lengths per (layout, shape): reused while they fit


def pick_length(key: tuple, needed: int, quantum: int, spread: float = 3.0, expected: float = 0.0) -> int:
    """A scan length >= ``needed``, stable across calls so that compiled kernels are reused.

    A new length is at least ``expected`` (a high quantile of the count, see `expected_length`)
    and has ``spread`` * sqrt(needed) of headroom over ``needed``, rounded up to ``quantum``; a
    length already compiled for ``key`` is reused while it fits without wasting much more.
    """
    headroom = int(spread * needed**0.5)
    known = _SIZES.setdefault(key, [])
    fits = [n for n in known if needed <= n <= max(needed + 2 * headroom, expected) + quantum]
    if fits:
        return min(fits)
    length = max(quantum, -(-int(max(needed + headroom, expected)) // quantum) * quantum)
    known.append(length)
    return length


def expected_length(scenario: Scenario, layout: str, sds: float = 5.0) -> float:
    """Mean + ``sds`` standard deviations of the entries per episode (flat) or tasks per slot (nested)."""
    bn, p, t = scenario.n_bs * scenario.tasks_per_slot, scenario.arrival_prob, scenario.decision_slots
    if scenario.arrivals == "uniform_count":  # a sum of B uniform counts on 1..N per slot
        b, n = scenario.n_bs, scenario.tasks_per_slot
        mean, var = b * (n + 1) / 2, b * (n * n - 1) / 12
        if layout == "nested":
            return min(bn, mean + sds * var**0.5)
        return min(t * bn, t * mean + sds * (t * var) ** 0.5)
    if layout == "nested":
        return min(bn, bn * p + sds * (bn * p * (1 - p)) ** 0.5)
    empty = (1 - p) ** bn  # a slot without tasks still takes one entry
    return min(t * max(bn, 1), t * (bn * p + empty) + sds * (t * bn * p * (1 - p)) ** 0.5)


def pad_trace(trace: Trace, tasks_per_slot: int) -> Trace:
    """``trace`` with task slots appended up to ``tasks_per_slot`` per BS that never hold a task."""
    sizes = np.asarray(trace.sizes)
    extra = tasks_per_slot - sizes.shape[-1]
    if extra < 0:
        raise ValueError(f"a trace with {sizes.shape[-1]} task slots cannot be padded to {tasks_per_slot}")
    if extra == 0:
        return trace
    pad = [(0, 0)] * (sizes.ndim - 1) + [(0, extra)]
    densities = np.broadcast_to(trace.densities, sizes.shape)
    results = None if trace.results is None else np.pad(np.broadcast_to(trace.results, sizes.shape), pad)
    return Trace(np.pad(sizes, pad), np.pad(densities, pad, constant_values=1.0), results)


def _stack_traces(traces: Sequence[Trace], decision_slots: int):
    """(sizes, densities, results or None), each (R, T, B·N), and N."""
    sizes = np.stack([np.asarray(tr.sizes)[:decision_slots] for tr in traces])  # (R, T, B, N)
    r, t, b, n = sizes.shape

    def stacked(field: str):
        return np.stack(
            [np.broadcast_to(getattr(tr, field), tr.sizes.shape)[:decision_slots] for tr in traces]
        ).reshape(r, t, b * n)

    with_results = [tr.results is not None for tr in traces]
    if any(with_results) and not all(with_results):
        raise ValueError("replicas of one kernel call must all have result downloads, or none")
    results = stacked("results") if all(with_results) else None
    return sizes.reshape(r, t, b * n), stacked("densities"), results, n


def compact_nested(traces: Sequence[Trace], decision_slots: int, width: int | None = None) -> Tasks:
    """(R, T, width) entries: each slot's present tasks first (C order kept), then padding."""
    flat, dens, results, n = _stack_traces(traces, decision_slots)
    r, t, bn = flat.shape
    present = flat > 0
    counts = present.sum(axis=-1)
    most = int(counts.max(initial=0))
    width = max(most, 1) if width is None else int(width)
    if most > width:
        raise ValueError(f"a slot has {most} tasks but the kernel width is {width}")
    order = np.argsort(~present, axis=-1, kind="stable")[..., :width]  # present first, C order kept
    if order.shape[-1] < width:  # width beyond B*N: pad with repeated entries
        order = np.concatenate([order, np.zeros((r, t, width - order.shape[-1]), order.dtype)], axis=-1)
    valid = np.arange(width) < counts[..., None]
    return Tasks(
        valid=valid,
        end=np.zeros_like(valid),
        slot=np.broadcast_to(np.arange(t)[:, None], valid.shape).astype(np.int32),
        pos=np.broadcast_to(np.arange(width), valid.shape).astype(np.int32),
        bs=(order // n).astype(np.int32),
        task=(order % n).astype(np.int32),
        size=np.where(valid, np.take_along_axis(flat, order, axis=-1), PAD_SIZE),
        density=np.where(valid, np.take_along_axis(dens, order, axis=-1), 1.0),
        result=None if results is None else np.where(valid, np.take_along_axis(results, order, axis=-1), 0.0),
    )


def compact_flat(traces: Sequence[Trace], decision_slots: int, length: int | None = None) -> Tasks:
    """(R, length) entries: every task in decision order; a slot without tasks gives one padding entry
    that only ends the slot; padding (no task, no slot end) fills up to ``length``."""
    flat, dens, results, n = _stack_traces(traces, decision_slots)
    r, t, bn = flat.shape
    counts = (flat > 0).sum(axis=-1)
    entries = np.maximum(counts, 1)  # (R, T)
    needed = int(entries.sum(axis=-1).max(initial=0))
    length = max(needed, 1) if length is None else int(length)
    if needed > length:
        raise ValueError(f"a replica has {needed} entries but the kernel length is {length}")
    out = {
        "valid": np.zeros((r, length), bool),
        "end": np.zeros((r, length), bool),
        "slot": np.zeros((r, length), np.int32),
        "pos": np.zeros((r, length), np.int32),
        "bs": np.zeros((r, length), np.int32),
        "task": np.zeros((r, length), np.int32),
        "size": np.full((r, length), PAD_SIZE),
        "density": np.ones((r, length)),
        "result": None if results is None else np.zeros((r, length)),
    }
    for i in range(r):
        slot, col = np.nonzero(flat[i] > 0)  # C order = decision order
        k = slot.shape[0]
        first = np.searchsorted(slot, np.arange(t))  # start of each slot among the tasks
        pos = np.arange(k) - first[slot]
        # each empty slot adds one entry before the tasks of later slots
        empty_before = np.cumsum(counts[i] == 0) - (counts[i] == 0)  # empty slots strictly before t
        at = np.arange(k) + empty_before[slot]
        out["valid"][i, at] = True
        out["slot"][i, at] = slot
        out["pos"][i, at] = pos
        out["bs"][i, at] = col // n
        out["task"][i, at] = col % n
        out["size"][i, at] = flat[i][slot, col]
        out["density"][i, at] = dens[i][slot, col]
        if results is not None:
            out["result"][i, at] = results[i][slot, col]
        ends = np.cumsum(entries[i]) - 1  # last entry of each slot
        out["end"][i, ends] = True
        empties = np.flatnonzero(counts[i] == 0)
        out["slot"][i, ends[empties]] = empties
        out["slot"][i, entries[i].sum() :] = t - 1
    return Tasks(**out)


def slot_counts(trace: Trace, decision_slots: int) -> np.ndarray:
    """Tasks per decision slot of one trace."""
    return np.count_nonzero(np.asarray(trace.sizes)[:decision_slots], axis=(-2, -1))
