"""Reporting on a finished sweep (``mecsim plot EXPERIMENT``): figures and ``table.md``.

* `data` — the published numbers that ship with the package, one row per cell, settings;
* `stats` — intervals over seeds, spread, the published runs given their start;
* `figures` — the figures; `table` — the Markdown table; `claims` — the AMCoEdge paper's
  headline claims and the verdict on them; `ddrl` — the diffusion-policy papers' claims
  (DEdgeAI's learning curves, DDRL-AMSA's delay reductions).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..results import load, write_text
from ..sweep import Experiment, load_experiment
from ..sweep.store import corrupt_parts
from .data import METRIC_NOTE, summarise
from .ddrl import amsa_section, dedgeai_figure, dedgeai_section
from .figures import convergence_figures, default_figures, start_end_figure, sweep_figures
from .table import results_table


def plot_experiment(
    experiment: str | Path | Experiment,
    results_dir: str | Path = "results",
    echo: Callable[[str], None] = print,
) -> list[Path]:
    """All figures and ``table.md`` of a sweep; returns the written paths."""
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    out = Path(results_dir) / exp.name
    if not out.is_dir():
        raise FileNotFoundError(
            f"{out}: no results of experiment {exp.name!r}; run `mecsim sweep {exp.name}` first"
        )
    corrupt = corrupt_parts(out)
    if corrupt:
        echo(
            f"note: leaving out {len(corrupt)} part(s) that are not readable parquet: "
            f"{', '.join(p.name for p in corrupt)} (`mecsim sweep {exp.name}` sets them aside and recomputes them)"
        )
    df = load(out, skip=corrupt)
    cells = exp.cells()
    members = exp.memberships(cells)
    known = set(members["cell_id"])
    extra = set(df["cell_id"]) - known
    if extra:
        echo(f"note: ignoring {len(extra)} part(s) that the current definition of {exp.name!r} does not list")
        df = df[df["cell_id"].isin(known)]
    missing = known - set(df["cell_id"])
    if missing:
        echo(
            f"note: {len(missing)} of {len(known)} cells have no results yet; the figures show the finished ones"
        )
    summary = summarise(df)
    figures = out / "figures"
    written = []
    written += sweep_figures(summary, members, exp, figures)
    written += convergence_figures(df, members, exp, figures)
    written += default_figures(summary, members, exp, figures)
    written += start_end_figure(summary, members, exp, figures)
    dedgeai = df["preset"].eq("dedgeai")
    if dedgeai.any():
        written += dedgeai_figure(df[dedgeai], exp, figures)
    table = out / "table.md"
    text = results_table(summary, members, exp, missing_cells=len(missing))
    if dedgeai.any():
        text += "\n" + "\n".join(dedgeai_section(df[dedgeai], exp))
    if "ddrl-amsa" in exp.methods:
        text += "\n" + "\n".join(amsa_section(summary, members, exp))
    text += (
        "\n## Figures\n\n"
        + "\n".join(f"* `figures/{p.name}`" for p in written if p.suffix == ".png")
        + f"\n\n{METRIC_NOTE}\n"
    )
    write_text(table, text)
    written.append(table)
    return written
