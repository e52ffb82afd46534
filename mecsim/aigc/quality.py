"""How good a repair is, on held-out images: masked-region error and plausibility.

* masked-region MSE: mean squared pixel error over the repaired pixels only (images in [0, 1]);
* plausibility: the share of repaired images that a digit classifier trained on the training split
  (scikit-learn's SVC on raw pixels; ~99 % on intact held-out digits) assigns to their true label.

Methods compared: ``repaint``, ``replacement`` (RePaint with r = 1), ``mean-fill`` (the hole filled
with the training images' mean) and ``hole`` (left empty: background).
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import pandas as pd

from . import data
from .masks import make
from .repair import Repairer, evaluations

METHODS = ("repaint", "replacement", "mean-fill", "hole")


@lru_cache(maxsize=2)
def classifier(dataset: str = "digits"):
    """An SVC (RBF kernel, scikit-learn defaults) on the training split's raw pixels."""
    from sklearn.svm import SVC

    train = data.load(dataset, "train")
    return SVC().fit(train.images.reshape(len(train), -1), train.labels)


def plausibility(images: np.ndarray, labels: np.ndarray, dataset: str = "digits") -> float:
    predicted = classifier(dataset).predict(np.asarray(images).reshape(len(images), -1))
    return float((predicted == labels).mean())


def masked_mse(repaired: np.ndarray, original: np.ndarray, mask: np.ndarray) -> float:
    hole = mask == 0
    return float(((repaired - original) ** 2)[hole].mean()) if hole.any() else 0.0


def fill(method: str, images: np.ndarray, mask: np.ndarray, dataset: str) -> np.ndarray:
    """The two repairs that need no model: the training mean in the hole, or the hole left empty."""
    if method == "mean-fill":
        mean = data.load(dataset, "train").images.mean(axis=0)
        return mask * images + (1 - mask) * mean
    if method == "hole":
        return mask * images
    raise ValueError(method)


def evaluate(
    repairer: Repairer,
    mask_kinds=("centre", "half", "strokes"),
    images: int = 100,
    steps: int = 100,
    jump_length: int = 10,
    resamples: int = 5,
    batch: int = 100,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (mask, method): masked MSE, plausibility, network evaluations per image, seconds per image."""
    dataset = repairer.model.dataset
    held = data.load(dataset, "held-out")
    x, labels = held.images[:images], held.labels[:images]
    rows = []
    for kind in mask_kinds:
        mask = make(kind, len(x), repairer.side, seed=seed)
        for method in METHODS:
            model_based = method in ("repaint", "replacement")
            r = resamples if method == "repaint" else 1
            j = jump_length if method == "repaint" else 1
            if model_based:  # every chunk size compiled before the clock starts
                repairer.warm({len(x[i : i + batch]) for i in range(0, len(x), batch)}, steps, j, r)
            started = time.perf_counter()
            if model_based:
                out = np.concatenate(
                    [
                        repairer.repair(x[i : i + batch], mask[i : i + batch], steps, j, r, seed=seed + i)
                        for i in range(0, len(x), batch)
                    ]
                )
                evals = evaluations(steps, j, r)
            else:
                out, evals = fill(method, x, mask, dataset), 0
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "mask": kind,
                    "method": method,
                    "images": len(x),
                    "hole_fraction": float((mask == 0).mean()),
                    "masked_mse": masked_mse(out, x, mask),
                    "plausibility": plausibility(out, labels, dataset),
                    "evaluations_per_image": evals,
                    "seconds_per_image": seconds / len(x),
                }
            )
    return pd.DataFrame(rows)
