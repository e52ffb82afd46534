"""Faults in the simulated system: edge servers that stop or slow down, links that degrade.

A fault scales a target's nominal speed by a factor over an interval: an ES's capacity
(``target = "server"``; factor 0 is an outage: its queued work waits) or the rate of the
links into an ES (``target = "link"``). Faults are fixed windows, or random processes in
which each target alternates exponentially distributed up and down times. Factors of
overlapping faults multiply.

Each episode draws its own realisation from the seed's ``faults`` stream (independent of the
arrivals), as a `Profile`: a piecewise-constant factor per target over time. The delay
models use it as follows:

* ``event`` — exactly: a job in service progresses at f·c(t) Gcycles/s, a transfer at
  r·c(t) Mbit/s, so a job caught by an outage finishes that much later;
* ``slotted`` (and the compiled kernel) — per slot: slot t's capacity is f·ā(t), ā the
  target's mean factor over the slot, in the closed-form waits and in the fluid drain; a
  server down for a whole slot has infinite waits, so a task sent there fails.

``observable`` says what schedulers see: the current capacities and rates (true: the
observation's delay terms use them) or only the nominal ones (false).
"""

from __future__ import annotations

import bisect
import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .streams import stream

Target = Literal["server", "link"]


def _not_a_boolean(value):
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


Number = Annotated[float, BeforeValidator(_not_a_boolean)]
Index = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=0)]
Factor = Annotated[float, BeforeValidator(_not_a_boolean), Field(ge=0, lt=1)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True)


class FaultWindow(_Spec):
    """A fixed fault: over [start, end) the target runs at ``factor`` times its nominal speed."""

    target: Target
    """"server" (an ES's capacity) or "link" (the rate of the links into an ES)"""
    index: Index
    """the ES (0-based)"""
    start: Number = Field(ge=0)
    """seconds from the start of the episode"""
    end: Number
    """seconds from the start of the episode (> start)"""
    factor: Factor = 0.0
    """speed during the window, as a fraction of the nominal one (0: outage)"""

    @model_validator(mode="after")
    def _interval(self) -> FaultWindow:
        if not self.end > self.start:
            raise ValueError(f"end = {self.end} must be after start = {self.start}")
        return self


class FaultProcess(_Spec):
    """Random faults: each target alternates up and down times, exponential with the given means."""

    target: Target
    """"server" or "link\""""
    indices: list[Index] | None = None
    """the ESs it applies to (default: all)"""
    mean_up: Number = Field(gt=0)
    """mean up time (s)"""
    mean_down: Number = Field(gt=0)
    """mean down time (s)"""
    factor: Factor = 0.0
    """speed while down, as a fraction of the nominal one (0: outage)"""

    @property
    def unavailability(self) -> float:
        """Long-run fraction of time down."""
        return self.mean_down / (self.mean_up + self.mean_down)


class Faults(_Spec):
    windows: list[FaultWindow] = []
    """fixed fault windows"""
    processes: list[FaultProcess] = []
    """random fault processes (each target's up and down times drawn per episode)"""
    observable: bool = True
    """schedulers see the current capacities and rates (true) or only the nominal ones (false)"""

    @property
    def active(self) -> bool:
        return bool(self.windows or self.processes)

    def check(self, n_bs: int) -> None:
        """Refuse targets beyond the scenario's ESs."""
        indices = [w.index for w in self.windows] + [i for p in self.processes for i in (p.indices or [])]
        bad = sorted({i for i in indices if i >= n_bs})
        if bad:
            raise ValueError(f"fault targets {bad} do not exist: the ESs are 0..{n_bs - 1}")


class Profile:
    """One episode's realisation: per target, a piecewise-constant speed factor over time.

    ``breaks[k]`` (sorted, starting at 0) and ``factors[k]`` (the factor from breaks[j] to breaks[j+1])
    per target ``(kind, index)``; random processes are drawn lazily, as far in time as asked for.
    """

    def __init__(self, faults: Faults, n_bs: int, seed: int, episode: int, stream_name: str = "arrivals"):

        self.faults = faults
        self._static: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for w in faults.windows:
            self._static.setdefault((w.target, w.index), []).append((w.start, w.end, w.factor))
        # one generator per (process, target): realisations do not depend on the order of queries
        index = 0 if stream_name == "arrivals" else 1
        self._processes: dict[tuple[str, int], list] = {}
        for k, p in enumerate(faults.processes):
            for i in p.indices if p.indices is not None else range(n_bs):
                rng = stream(seed, "faults", episode, index, k, 0 if p.target == "server" else 1, i)
                self._processes.setdefault((p.target, i), []).append([p, rng, [0.0], False])
        self._cache: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
        self._horizon: dict[tuple[str, int], float] = {}

    @property
    def active(self) -> bool:
        return self.faults.active

    def _extend(self, key: tuple[str, int], until: float) -> None:
        """Draw the random processes of ``key`` up to at least ``until``; rebuild its segments."""
        if self._horizon.get(key, -1.0) >= until and key in self._cache:
            return
        down_intervals = []
        for record in self._processes.get(key, []):
            process, rng, edges, _ = record
            while edges[-1] <= until:  # edges alternate: up ends, down ends, ...
                up = len(edges) % 2 == 1
                edges.append(edges[-1] + rng.exponential(process.mean_up if up else process.mean_down))
            down_intervals += [(edges[j], edges[j + 1], process.factor) for j in range(1, len(edges) - 1, 2)]
        intervals = self._static.get(key, []) + down_intervals
        points = sorted({0.0, *(a for a, _, _ in intervals), *(b for _, b, _ in intervals)})
        factors = []
        for j, start in enumerate(points):
            end = points[j + 1] if j + 1 < len(points) else math.inf
            mid = start + (end - start) / 2 if math.isfinite(end) else start + 1.0
            factor = 1.0
            for a, b, f in intervals:
                if a <= mid < b:
                    factor *= f
            factors.append(factor)
        self._cache[key] = (points, factors)
        self._horizon[key] = min((r[2][-1] for r in self._processes.get(key, [])), default=math.inf)

    def segments(self, target: str, index: int, until: float) -> tuple[list[float], list[float]]:
        """(breaks, factors) of a target, valid at least up to time ``until``."""
        key = (target, index)
        self._extend(key, until)
        return self._cache[key]

    def factor_at(self, target: str, index: int, t: float) -> float:
        breaks, factors = self.segments(target, index, t + 1e-9)
        return factors[bisect.bisect_right(breaks, t) - 1]

    def finish(self, target: str, index: int, start: float, amount: float, speed: float) -> float:
        """When ``amount`` (Gcycles or Mbit) started at ``start`` at nominal ``speed`` is done."""
        if amount <= 0.0:
            return start
        until = start + amount / speed * 2 + 1.0
        while True:
            breaks, factors = self.segments(target, index, until)
            j = bisect.bisect_right(breaks, start) - 1
            t, left = start, amount
            while j < len(breaks):
                end = breaks[j + 1] if j + 1 < len(breaks) else math.inf
                rate = speed * factors[j]
                finish = t + left / rate if rate > 0.0 else math.inf
                if finish <= end:
                    if finish <= until:
                        return finish
                    break  # past the drawn realisation: a down time may begin there
                if end > until:
                    break  # the realisation is not drawn this far yet
                left -= rate * (end - t)
                t, j = end, j + 1
            until *= 2

    def done(self, target: str, index: int, start: float, now: float, speed: float) -> float:
        """Work done between ``start`` and ``now`` at nominal ``speed``."""
        breaks, factors = self.segments(target, index, now)
        j = bisect.bisect_right(breaks, start) - 1
        t, total = start, 0.0
        while t < now:
            end = min(breaks[j + 1] if j + 1 < len(breaks) else math.inf, now)
            total += speed * factors[j] * (end - t)
            t, j = end, j + 1
        return total

    def slot_means(self, target: str, n_bs: int, slots: int, slot_length: float) -> np.ndarray:
        """(slots, B): each target's mean factor over each slot."""
        out = np.ones((slots, n_bs))
        horizon = slots * slot_length
        for i in range(n_bs):
            for t in range(slots):
                a, b = t * slot_length, (t + 1) * slot_length
                out[t, i] = self.done(target, i, a, b, 1.0) / slot_length if b <= horizon else 1.0
        return out
