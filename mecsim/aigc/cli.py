"""``mecsim aigc``: train the repair model, repair images, measure the service's cost."""

from __future__ import annotations

import io
import time
from pathlib import Path

import click
import numpy as np

from .data import DATASETS
from .masks import MASKS

dataset_option = click.option(
    "--dataset",
    type=click.Choice(list(DATASETS)),
    default="digits",
    show_default=True,
    help="packaged images",
)
weights_option = click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="weights file (default: the shipped weights of --dataset)",
)


@click.group("aigc")
def aigc() -> None:
    """The AIGC service: diffusion image repair (RePaint) with a small DDPM trained on packaged digits."""


@aigc.command("train")
@dataset_option
@click.option("--iterations", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="weights file [default: aigc-DATASET.msgpack]",
)
@click.option("--install", is_flag=True, help="write the result over the package's shipped weights")
@click.option("--force", is_flag=True, help="overwrite an existing --out")
def train_command(dataset, iterations, batch_size, seed, out, install, force) -> None:
    """Train the repair model from scratch (resumes from OUT.ckpt when one is there)."""
    from ..results import prepare_output
    from .train import TrainConfig, train
    from .weights import shipped_path

    if install and out:
        raise click.UsageError("give --out or --install, not both")
    target = shipped_path(dataset) if install else Path(out or f"aigc-{dataset}.msgpack")
    prepare_output(target, "--out", force=force or install)
    result = train(
        TrainConfig(dataset=dataset, iterations=iterations, batch_size=batch_size, seed=seed), target
    )
    click.echo(
        f"trained {result.model.meta['parameters']} parameters for {iterations} iterations "
        f"(resumed at {result.resumed_from}) in {result.seconds:.0f} s; final loss "
        f"{result.model.meta['final_loss']:.4f} -> {target}"
    )


def _mask(value: str, n: int, side: int, seed: int) -> np.ndarray:
    from .errors import AigcError
    from .masks import make, validate

    if value in MASKS:
        return make(value, n, side, seed=seed)
    path = Path(value)
    if not path.is_file():
        raise AigcError(f"--mask {value!r}: neither {', '.join(MASKS)} nor a .npy file")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise AigcError(f"--mask {value!r}: not a readable .npy array ({err})") from None
    return validate(array, n, side, name=f"--mask {value!r}")


@aigc.command("repair")
@click.option(
    "--mask", default="centre", show_default=True, help=f"{', '.join(MASKS)}, or a .npy array (1 = keep)"
)
@click.option("--images", type=click.IntRange(min=1), default=16, show_default=True, help="held-out images")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True, help="respaced steps N")
@click.option("--jump-length", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--resamples", type=click.IntRange(min=1), default=5, show_default=True, help="r (1: replacement)"
)
@click.option("--seed", type=int, default=0, show_default=True)
@dataset_option
@weights_option
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="folder for grid.png and repair.npz"
)
@click.option("--force", is_flag=True, help="write into a folder that is not empty")
def repair_command(mask, images, steps, jump_length, resamples, seed, dataset, weights, out, force) -> None:
    """Repair held-out images: writes OUT/grid.png (original, masked, repaired) and OUT/repair.npz."""
    from ..results import prepare_output, write_bytes
    from . import data
    from . import weights as weights_io
    from .quality import masked_mse, plausibility
    from .repair import Repairer, evaluations

    out = prepare_output(out, "--out", force=force, directory=True)
    model = weights_io.load(weights, dataset)
    held = data.load(model.dataset, "held-out")
    if images > len(held):
        raise click.BadParameter(
            f"{images}: the held-out split has {len(held)} images", param_hint="--images"
        )
    x, labels = held.images[:images], held.labels[:images]
    m = _mask(mask, images, model.unet.side, seed)
    repairer = Repairer(model)
    repairer.warm([images], steps, jump_length, resamples)
    started = time.perf_counter()
    repaired = repairer.repair(x, m, steps, jump_length, resamples, seed=seed)
    seconds = time.perf_counter() - started
    buf = io.BytesIO()
    np.savez_compressed(buf, original=x, mask=m, repaired=repaired)
    write_bytes(out / "repair.npz", buf.getvalue())
    grid_png(
        x, m, repaired, out / "grid.png", f"{mask} mask, N = {steps}, j = {jump_length}, r = {resamples}"
    )
    click.echo(
        f"repaired {images} image(s) in {seconds:.2f} s ({evaluations(steps, jump_length, resamples)} network "
        f"evaluations each); masked-region MSE {masked_mse(repaired, x, m):.4f}, plausibility "
        f"{plausibility(repaired, labels, model.dataset):.0%} (hole left empty: "
        f"{plausibility(x * m, labels, model.dataset):.0%}) -> {out}/grid.png, {out}/repair.npz"
    )


def grid_png(original, mask, repaired, path: Path, title: str) -> Path:
    """Rows: original, masked (the hole in red), repaired; one column per image (at most 16)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ..results import write_bytes

    n = min(len(original), 16)
    fig, axes = plt.subplots(3, n, figsize=(0.8 * n + 0.8, 2.8), squeeze=False)
    masked = np.repeat(original[:n, ..., None], 3, axis=-1) * mask[:n, ..., None]
    masked[..., 0] += 1 - mask[:n]  # the hole in red
    rows = (("original", original[:n]), ("masked", masked), ("repaired", repaired[:n]))
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return write_bytes(path, buf.getvalue())


@aigc.command("profile")
@dataset_option
@weights_option
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--evaluations", type=click.IntRange(min=1), default=50, show_default=True, help="s of the fragment"
)
@click.option(
    "--capacity-ghz",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="reference capacity of the measured worker [default: cores x clock]",
)
@click.option("--out", type=click.Path(dir_okay=False), default="aigc-profile.toml", show_default=True)
@click.option("--force", is_flag=True, help="overwrite --out")
def profile_command(dataset, weights, repeats, evaluations, capacity_ghz, out, force) -> None:
    """Time repair requests over batch sizes and evaluations, fit t(b, s), write a scenario fragment."""
    from ..results import prepare_output, write_text
    from . import weights as weights_io
    from .cost import fit, machine_capacity_ghz, measure, scenario_fragment
    from .repair import Repairer

    out = prepare_output(out, "--out", force=force)
    model = weights_io.load(weights, dataset)
    times = measure(Repairer(model), repeats=repeats)
    fits = fit(times)
    for row in times.itertuples():
        click.echo(f"b = {row.images:2d}, s = {row.evaluations:3d}: {row.seconds * 1e3:8.1f} ms")
    for f in fits:
        click.echo(f"t(b, s) = {f.a:.4g} + {f.d:.4g}·s + {f.c:.4g}·b·s s   ({f.shape}: R² = {f.r2:.4f})")
    capacity = capacity_ghz or machine_capacity_ghz()
    write_text(out, scenario_fragment(fits[0], capacity, model.unet.side, times, evaluations))
    click.echo(f"calibration ({fits[0].shape}, f = {capacity:.3f} GHz) -> {out}")
