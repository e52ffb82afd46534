"""What a repair request costs on this machine, and that cost in the simulator's terms.

`measure` times requests of b images with s network evaluations each (replacement sampling with
N = s steps, compiled ahead, median of repeats). `fit` fits t(b, s) = a + c·b·s and, beside it,
t(b, s) = a + d·s + c·b·s (a per-evaluation cost that does not grow with the batch: dispatch and
small-batch inefficiency), reporting R² of each. `scenario_fragment` turns the chosen fit into a
workload: at a reference capacity f (GHz), a request is w(b, s) = f·t(b, s) Gcycles, and with
the image as the unit of data (b images = b·image_mbit Mbit), its density in the simulator's
units (cycles per bit) follows.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import data
from .masks import make
from .repair import Repairer

BATCHES = (1, 2, 4, 8, 16)
EVALUATIONS = (10, 25, 50)
BITS_PER_MBIT = 1.024e6  # the simulator's default (`Scenario.bits_per_mbit`)


def measure(repairer: Repairer, batches=BATCHES, evaluations=EVALUATIONS, repeats: int = 3, progress=True):
    """One row per (batch, evaluations): the median wall time of ``repeats`` requests (compiled beforehand)."""
    from tqdm.auto import tqdm

    held = data.load(repairer.model.dataset, "held-out").images
    rows = []
    grid = [(b, s) for b in batches for s in evaluations]
    for b, s in tqdm(grid, desc="aigc profile", disable=not progress):
        x = np.resize(held, (b, *held.shape[1:]))
        mask = make("centre", b, repairer.side)
        repairer.warm([b], s, 1, 1)
        times = []
        for rep in range(repeats):
            started = time.perf_counter()
            repairer.repair(x, mask, steps=s, jump_length=1, resamples=1, seed=rep)
            times.append(time.perf_counter() - started)
        rows.append({"images": b, "evaluations": s, "seconds": float(np.median(times))})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Fit:
    shape: str  # "a + c·b·s" or "a + d·s + c·b·s"
    a: float  # s, per request
    d: float  # s per evaluation (0 in the first shape)
    c: float  # s per image-evaluation
    r2: float

    def seconds(self, images, evaluations):
        return (
            self.a + self.d * np.asarray(evaluations) + self.c * np.asarray(images) * np.asarray(evaluations)
        )


def least_squares(columns, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients of y on the given design columns, and the fit's R²."""
    design = np.stack(columns, axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    r2 = 1.0 - float((residual**2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-30))
    return coef, r2


def fit(times: pd.DataFrame) -> list[Fit]:
    """Least-squares fits of both shapes, the better R² first."""
    b, s, t = (times[k].to_numpy(float) for k in ("images", "evaluations", "seconds"))
    fits = []
    for shape, columns in (
        ("a + c·b·s", [np.ones_like(b), b * s]),
        ("a + d·s + c·b·s", [np.ones_like(b), s, b * s]),
    ):
        coef, r2 = least_squares(columns, t)
        a, c = coef[0], coef[-1]
        d = coef[1] if len(coef) == 3 else 0.0
        fits.append(Fit(shape, float(a), float(d), float(c), r2))
    return sorted(fits, key=lambda f: -f.r2)


def machine_capacity_ghz() -> float:
    """This process's cores times their clock (from /proc/cpuinfo; 1 GHz per core where it says nothing)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    mhz = []
    try:
        with open("/proc/cpuinfo") as fh:
            mhz = [float(line.split(":")[1]) for line in fh if line.lower().startswith("cpu mhz")]
    except OSError:
        pass
    return cores * (float(np.mean(mhz)) / 1000 if mhz else 1.0)


def scenario_fragment(f: Fit, capacity_ghz: float, side: int, times: pd.DataFrame, evaluations: int) -> str:
    """A TOML fragment: the calibration, and size/density ranges for requests of 1..16 images at ``evaluations``."""
    image_mbit = side * side * 8 / BITS_PER_MBIT  # an 8-bit grey image
    lo_b, hi_b = int(times["images"].min()), int(times["images"].max())

    def density(b):  # cycles per bit of a request of b images
        gcycles = capacity_ghz * float(f.seconds(b, evaluations))
        return gcycles * 1e9 / (b * image_mbit * BITS_PER_MBIT)

    lines = [
        "# mecsim aigc profile: the image-repair service as a simulator workload",
        f"# machine: {platform.node()} ({platform.processor() or platform.machine()}), "
        f"{time.strftime('%Y-%m-%d')}; reference capacity f = {capacity_ghz:.3f} GHz (this process's cores x clock)",
        f"# fit: t(b, s) = {f.a:.4g} + {f.d:.4g}*s + {f.c:.4g}*b*s seconds ({f.shape}; R^2 = {f.r2:.4f})",
        f"# a request of b images with s evaluations each = f*t(b, s) Gcycles; an image = {image_mbit:.6f} Mbit",
        f"# (8-bit {side} x {side}); densities below for s = {evaluations} and b = {lo_b}..{hi_b}.",
        "",
        "[calibration]",
        f"per_request_s = {f.a:.6g}",
        f"per_evaluation_s = {f.d:.6g}",
        f"per_image_evaluation_s = {f.c:.6g}",
        f"r2 = {f.r2:.6f}",
        f"reference_capacity_ghz = {capacity_ghz:.6g}",
        f"image_mbit = {image_mbit:.6g}",
        f"evaluations = {evaluations}",
        "",
        "[scenario]",
        f"size_range = [{lo_b * image_mbit:.6g}, {hi_b * image_mbit:.6g}]",
        f"density_range = [{density(hi_b):.6g}, {density(lo_b):.6g}]",
        f"bits_per_mbit = {BITS_PER_MBIT:.6g}",
    ]
    return "\n".join(lines) + "\n"
