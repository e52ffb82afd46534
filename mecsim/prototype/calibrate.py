"""Measure the running prototype in the simulator's terms: each ES's compute speed, each link's rate.

Compute: every request shape (b images, s steps) on every worker, ``repeats`` times, timed inside
the worker (``repair_part``'s own interval, under its CPU quota). Per worker a least-squares
fit t_i(b, s) = a_i + c_i·b·s; the simulator charges b·s·c_nominal / f_i, so its calibrated
capacity is f_i = c_nominal / c_i. The intercept a_i (a per-request cost the model does not have)
is reported beside it.

Links: real sub-batches (1, half and all of ``max_images`` images) made on one worker and consumed
on ES i, the transfer interval taken from Dask's task stream. A fit t = a + 8·image_bytes / rate
gives the effective rate into ES i (headers, acknowledgements and pacing included) and a
per-transfer latency a (framing and the request), which the event model does not have.

Dask's own cost: the client's round trip of an empty task on each worker (median).
"""

from __future__ import annotations

import time

import numpy as np

from ..aigc.cost import least_squares
from . import service
from .config import IMAGE_BYTES, PrototypeConfig
from .phases import intervals
from .service import warm_shapes


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares y = a + c·x; returns (a, c, R²)."""
    (a, c), r2 = least_squares([np.ones_like(x), x], y)
    return float(a), float(c), r2


def compute(client, config: PrototypeConfig, repeats: int = 3) -> list[dict]:
    """Per ES: fit of compute seconds against images·steps, and the calibrated capacity."""
    shapes = warm_shapes(config.service.max_images, config.service.step_choices)
    out = []
    for i in range(config.n_es):
        rows = []
        for b, s in shapes:
            part = client.submit(
                service.make_part, 0, 0, b, config.service.mask, workers=[f"ES{i}"], pure=False
            )
            for rep in range(repeats):
                r = client.submit(
                    service.repair_part, part, s, rep, resources={f"ES{i}": 1}, pure=False
                ).result()
                rows.append((b * s, r["ended"] - r["started"]))
        x, y = (np.array(v, float) for v in zip(*rows))
        a, c, r2 = _fit(x, y)
        out.append({
            "es": i, "per_request_s": a, "per_image_step_s": c, "r2": r2,
            "nominal_capacity": config.scenario.capacities[i],
            "capacity": config.service.seconds_per_evaluation / c,
        })  # fmt: skip
    return out


def links(client, config: PrototypeConfig, repeats: int = 3) -> list[dict]:
    """Per ES: fit of the time to move a real sub-batch into it against its image bytes; the effective rate."""
    out = []
    client.get_task_stream()
    sizes = sorted({1, max(1, config.service.max_images // 2), config.service.max_images})
    for i in range(config.n_es):
        source = (i + 1) % config.n_es
        keys = []
        started = time.time()
        for images in sizes:
            for _ in range(repeats):
                part = client.submit(
                    service.make_part, 0, 0, images, config.service.mask, workers=[f"ES{source}"], pure=False
                )
                e = client.submit(service.echo, part, workers=[f"ES{i}"], pure=False)
                e.result()
                keys.append((str(e.key), images * IMAGE_BYTES))
                del part, e  # the next one is made afresh (nothing cached at ES i)
        stream = {str(r["key"]): r for r in client.get_task_stream(start=started - 1)}
        xs, ys = [], []
        for key, n_bytes in keys:
            transfers = intervals(stream.get(key), "transfer")
            if transfers:
                xs.append(8.0 * n_bytes)
                ys.append(sum(stop - start for start, stop in transfers))
        a, c, r2 = _fit(np.array(xs), np.array(ys)) if len(set(xs)) > 1 else (np.nan, np.nan, np.nan)
        out.append({
            "es": i, "source": source, "latency_s": a, "r2": r2, "nominal_rate": config.scenario.rates[i],
            "rate": 1.0 / (c * config.scenario.bits_per_mbit) if c and c > 0 else np.nan,
        })  # fmt: skip
    return out


def dask_round_trip(client, config: PrototypeConfig, repeats: int = 20) -> list[float]:
    """Median client round trip (s) of an empty task on each worker."""
    medians = []
    for i in range(config.n_es):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.submit(service.echo, None, workers=[f"ES{i}"], pure=False).result()
            times.append(time.perf_counter() - started)
        medians.append(float(np.median(times)))
    return medians


def calibrate(client, config: PrototypeConfig, repeats: int = 3) -> dict:
    return {
        "compute": compute(client, config, repeats),
        "links": links(client, config, repeats),
        "dask_round_trip_s": dask_round_trip(client, config),
    }


def calibrated_values(calibration: dict, config: PrototypeConfig) -> tuple[list[float], list[float]]:
    """(capacities, rates) for the simulator; a link that could not be measured keeps its nominal rate."""
    caps = [row["capacity"] for row in calibration["compute"]]
    rates = [
        row["rate"] if np.isfinite(row["rate"]) and row["rate"] > 0 else config.scenario.rates[row["es"]]
        for row in calibration["links"]
    ]
    return caps, rates
