"""Repair masks: 1 keeps a pixel, 0 marks it for repair (the reference's convention, spec §7)."""

from __future__ import annotations

import numpy as np

from .errors import AigcError

MASKS = ("centre", "half", "strokes")


def make(kind: str, n: int, side: int, seed: int = 0) -> np.ndarray:
    """``n`` masks (n, side, side) of ``kind``: ``centre`` (a square of half the side in the middle),
    ``half`` (the lower half), ``strokes`` (thin random scribbles over about a quarter of the pixels,
    one per image, from ``seed``)."""
    if kind not in MASKS:
        raise AigcError(f"mask = {kind!r}: allowed are {', '.join(map(repr, MASKS))}, or a mask array")
    mask = np.ones((n, side, side), np.float32)
    if kind == "centre":
        lo = side // 4
        mask[:, lo : lo + side // 2, lo : lo + side // 2] = 0
    elif kind == "half":
        mask[:, side // 2 :, :] = 0
    else:
        rng = np.random.default_rng(seed)
        for m in mask:
            _scribble(m, rng, target=0.25)
    return mask


def _scribble(mask: np.ndarray, rng: np.random.Generator, target: float) -> None:
    """Random walks of one-pixel lines (moves to the 8 neighbours, mostly straight on) until ``target`` of
    the pixels are marked."""
    side = mask.shape[0]
    moves = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])
    while (mask == 0).mean() < target:
        y, x = rng.integers(0, side, 2)
        heading = rng.integers(0, 8)
        for _ in range(rng.integers(side // 2, 2 * side)):
            mask[y, x] = 0
            if rng.random() < 0.3:
                heading = (heading + rng.choice([-1, 1])) % 8
            y, x = np.clip((y, x) + moves[heading], 0, side - 1)


def validate(mask, n: int, side: int, name: str = "mask") -> np.ndarray:
    """A user's mask array, (side, side) for every image or (n, side, side), with values 0 and 1 only."""
    m = np.asarray(mask)
    if m.shape == (side, side):
        m = np.broadcast_to(m, (n, side, side))
    if m.shape != (n, side, side):
        raise AigcError(f"{name}: shape {m.shape}; expected ({side}, {side}) or ({n}, {side}, {side})")
    values = np.unique(m)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise AigcError(f"{name}: values {shown}; allowed are 0 (repair) and 1 (keep)")
    return m.astype(np.float32)
