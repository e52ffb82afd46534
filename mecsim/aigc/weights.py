"""Trained weights on disk: the network's parameters with what they fit (architecture, dataset, schedule).

One msgpack file (`flax.serialization`): ``{"meta": {...}, "params": {...}}``. The package ships
the digits model as ``mecsim/data/aigc-digits.msgpack``; `mecsim aigc train --install` replaces it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from ..results import write_bytes
from .errors import AigcError
from .unet import UNetConfig

FORMAT = "mecsim-aigc-weights/1"


class WeightsError(AigcError):
    """A weights file that cannot be used: unreadable, of another format, or for another model."""


@dataclass(frozen=True)
class Model:
    """A trained ε-network: its parameters, architecture, dataset and training schedule length T."""

    params: Any
    unet: UNetConfig
    dataset: str
    diffusion_steps: int
    meta: dict = field(default_factory=dict)  # training record: seed, iterations, final loss, ...


def shipped_path(dataset: str = "digits") -> Path:
    return Path(str(resources.files("mecsim").joinpath(f"data/aigc-{dataset}.msgpack")))


def save(model: Model, path: str | Path) -> Path:
    meta = {
        "format": FORMAT,
        "dataset": model.dataset,
        "diffusion_steps": model.diffusion_steps,
        "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.unet).items()},
        "record": model.meta,
    }
    params = serialization.to_state_dict(model.params)
    return write_bytes(path, serialization.msgpack_serialize({"meta": meta, "params": params}))


def load(path: str | Path | None = None, dataset: str = "digits") -> Model:
    """Weights from ``path`` (default: the shipped ones for ``dataset``); a clear `WeightsError` otherwise."""
    path = Path(path) if path is not None else shipped_path(dataset)
    if not path.is_file():
        hint = " (train them: mecsim aigc train --install)" if path == shipped_path(dataset) else ""
        raise WeightsError(f"weights {path}: no such file{hint}")
    try:
        data = serialization.msgpack_restore(path.read_bytes())
        meta = data["meta"]
        if meta.get("format") != FORMAT:
            raise WeightsError(f"weights {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        unet = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["unet"].items()})
        params = data["params"]
        leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - msgpack and key errors alike mean a damaged file
        raise WeightsError(
            f"weights {path}: not a readable weights file ({type(err).__name__}: {err})"
        ) from err
    if not leaves or not all(np.all(np.isfinite(x)) for x in leaves):
        raise WeightsError(f"weights {path}: parameters missing or not finite")
    _check_shapes(path, unet, params)
    return Model(params, unet, meta["dataset"], int(meta["diffusion_steps"]), dict(meta.get("record", {})))


def _check_shapes(path: Path, unet: UNetConfig, params) -> None:
    from .unet import init_params

    expected = jax.eval_shape(lambda: init_params(unet, 0))
    got = jax.tree.map(lambda x: np.shape(x), params)
    want = jax.tree.map(lambda x: tuple(x.shape), expected)
    if jax.tree.structure(got) != jax.tree.structure(want) or jax.tree.leaves(got) != jax.tree.leaves(want):
        raise WeightsError(
            f"weights {path}: the parameters do not fit the architecture its header names ({unet})"
        )
