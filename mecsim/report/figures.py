"""The figures of a sweep (PNG and byte-stable SVG under ``results/<experiment>/figures/``).

* ``sweep-<name>-<model>`` — mean make-span and failure rate against each swept parameter,
  one line per method, 95 % confidence band over seeds, with the published historical sweeps
  (AMCoEdge, Optimal) overlaid;
* ``convergence-<model>`` — per-episode online make-span and failure rate (smoothed), per
  method, 95 % band over seeds, with the published curves overlaid;
* ``default-point`` — every method at the default point, per setting;
* ``default-seeds`` — the same cells seed by seed (box and points), with the published values
  and the reference code's own reruns marked: where its runs fall among ours;
* ``start-end`` — each learner's per-seed end against its exploring start, with the line read
  at the published run's start (`stats.predict_from_start`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..sweep import Experiment
from .data import (
    FIRST_EPISODES,
    LAST_EPISODES,
    METRIC_NOTE,
    comparable_to_published,
    default_point,
    published,
    published_default,
    published_sweeps,
    rerun_default,
    start_fit_runs,
    with_settings,
)
from .stats import INTERVAL_NOTE, band, percentile_interval, predict_from_start

SMOOTH_EPISODES = 10
PUBLISHED_NAMES = {
    "random": "RandCoEdge",
    "optimal": "Optimal",
    "amcoedge": "AMCoEdge",
    "smcoedge": "SMCoEdge (k=3)",
    "drlcoedge": "DRLCoEdge",
}
AXIS_LABELS = {
    "deadline": "deadline (s)",
    "arrival_prob": "arrival probability p",
    "tasks_per_slot": "task slots per BS per time slot N",
    "capacities": "largest ES capacity F (GHz); capacities linspace(10, F, 5)",
    "faults": "ES unavailability u (long-run fraction of time down)",
}


def _setup() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid")
    return plt, sns


def _palette(methods: list[str]) -> dict[str, Any]:
    import seaborn as sns

    colours = sns.color_palette("tab10", max(10, len(methods)))
    return {m: colours[i] for i, m in enumerate(methods)}


def _save(fig: Any, out_dir: Path, stem: str, caption: str) -> list[Path]:
    fig.text(0.01, 0.005, caption, ha="left", va="bottom", fontsize=7, wrap=True, color="0.25")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    import matplotlib.pyplot as plt

    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    # the same data give the same SVG bytes: no date, fixed element ids (committed figures stay unchanged)
    with plt.rc_context({"svg.hashsalt": stem}):
        fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})

    plt.close(fig)
    return paths


def sweep_figures(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment, out_dir: Path) -> list[Path]:
    plt, sns = _setup()
    palette = _palette(list(exp.methods))
    pub = published_sweeps()
    comparable = comparable_to_published(exp)
    written: list[Path] = []
    names = list(dict.fromkeys(b.name for b in exp.blocks if b.parameter is not None))
    for name in names:
        parameter = exp.parameter_of(name)
        data = summary.drop(columns=["sweep", "swept_value", "sweeps"], errors="ignore").merge(
            members[members["sweep"] == name][["cell_id", "swept_value"]], on="cell_id"
        )
        if data.empty:
            continue
        for model, part in data.groupby("model", sort=False):
            presets = part["preset"].nunique()
            n_seeds = part["seed"].nunique()
            fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
            for ax, metric, ylabel, pub_col in (
                (axes[0], "makespan", "mean make-span (s)", "makespan_last50"),
                (axes[1], "failure_rate", "failure rate", "failure_rate_last50"),
            ):
                sns.lineplot(
                    data=part,
                    x="swept_value",
                    y=metric,
                    hue="method",
                    style="preset" if presets > 1 else None,
                    errorbar=percentile_interval,
                    err_style="band",
                    marker="o",
                    palette=palette,
                    ax=ax,
                    hue_order=[m for m in exp.methods if m in set(part["method"])],
                )
                published_rows = pub[pub["sweep"] == name] if comparable else pub.iloc[:0]
                if model == "slotted" and not published_rows.empty:
                    for method, rows in published_rows.groupby("method"):
                        ax.plot(
                            rows["swept_value"],
                            rows[pub_col],
                            linestyle=":",
                            marker="D",
                            markersize=4,
                            markerfacecolor="none",
                            color=palette.get(method, "k"),
                            label=f"published {PUBLISHED_NAMES.get(method, method)} (historical)",
                        )
                ax.set_xlabel(AXIS_LABELS.get(parameter, parameter))
                ax.set_ylabel(ylabel)
            _figure_legend(fig, axes)
            fig.suptitle(
                f"{exp.name}: {name} sweep, {model} model, preset "
                f"{', '.join(sorted(part['preset'].unique()))}, {n_seeds} seed(s)"
            )
            fig.tight_layout(rect=(0, 0.07, 1, 1))
            caption = METRIC_NOTE
            if comparable and model == "slotted" and not pub[pub["sweep"] == name].empty:
                caption += (
                    " Dotted hollow diamonds: the reference's historical sweep files (AMCoEdge first commit; "
                    "AMCoEdge last 50 of 300-500 episodes, Optimal 20 episodes), spec §8.3"
                )
                if name == "capacity":
                    caption += "; their capacity vectors are unknown (tags f20-f80), so compare shapes only"
                caption += "."
            written += _save(fig, out_dir, f"sweep-{name}-{model}", caption)
    return written


def _published_stars(ax: Any, order: list[str], pub: pd.DataFrame, size: float, label: str) -> None:
    """A black star at each method of ``order`` (x = its position) with a published make-span."""
    xs = [i for i, m in enumerate(order) if m in pub.index]
    ax.scatter(
        xs, [pub.loc[order[i], "makespan"] for i in xs], marker="*", s=size, color="k", zorder=5, label=label
    )


def _rerun_diamonds(ax: Any, xs, ys, label: str) -> None:
    """Hollow black diamonds: runs of the reference's own code."""
    ax.scatter(
        xs, ys, marker="D", s=18, facecolor="none", edgecolor="k", linewidth=0.8, zorder=5, label=label
    )


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend for the whole figure, right of the panels (labels deduplicated across panels)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(text, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=7,
        frameon=False,
    )


def _smoothed(df: pd.DataFrame, keys: list[str], window: int) -> pd.DataFrame:
    df = df.sort_values(keys + ["episode"]).copy()
    for col in ("mean_makespan", "failure_rate"):
        df[col] = df.groupby(keys)[col].transform(lambda s: s.rolling(window, min_periods=1).mean())
    return df


def convergence_figures(
    df: pd.DataFrame, members: pd.DataFrame, exp: Experiment, out_dir: Path
) -> list[Path]:
    plt, sns = _setup()
    palette = _palette(list(exp.methods))
    ids = set(members.loc[members["sweep"] == "convergence", "cell_id"])
    data = df[df["cell_id"].isin(ids) & (df["phase"] == "online")]
    if data.empty:
        return []
    written: list[Path] = []
    comparable = comparable_to_published(exp)
    pub = _smoothed(published(), ["method"], SMOOTH_EPISODES)
    for model, part in data.groupby("model", sort=False):
        smooth = with_settings(_smoothed(part, ["cell_id"], SMOOTH_EPISODES), exp)
        settings = sorted(smooth["setting"].unique(), key=lambda s: ("common" in s, s))
        fig, axes = plt.subplots(
            2, len(settings), figsize=(5.2 * len(settings), 7), squeeze=False, sharex=True
        )
        for col, setting in enumerate(settings):
            rows = smooth[smooth["setting"] == setting]
            for r, (metric, ylabel) in enumerate(
                (("mean_makespan", "mean make-span (s)"), ("failure_rate", "failure rate"))
            ):
                ax = axes[r][col]
                bands = band(rows, ["method", "episode"], metric)
                for method in [m for m in exp.methods if m in set(bands["method"])]:
                    b = bands[bands["method"] == method]
                    sns.lineplot(
                        x=b["episode"], y=b["mean"], color=palette[method], label=method, ax=ax, errorbar=None
                    )
                    ax.fill_between(
                        b["episode"], b["lo"], b["hi"], color=palette[method], alpha=0.2, linewidth=0
                    )
                if comparable and model == "slotted" and "own" in setting:
                    for method in [m for m in exp.methods if m in set(bands["method"])]:
                        p = pub[pub["method"] == method]
                        if not p.empty:
                            ax.plot(
                                p["episode"],
                                p[metric],
                                linestyle="--",
                                linewidth=0.9,
                                color=palette[method],
                                alpha=0.8,
                                label=f"published {PUBLISHED_NAMES.get(method, method)}",
                            )
                ax.set_ylabel(ylabel)
                ax.set_xlabel("episode")
                ax.set_title(setting if r == 0 else "")
        _figure_legend(fig, axes.ravel())
        fig.suptitle(
            f"{exp.name}: convergence at the default point ({model} model), "
            f"{part['seed'].nunique()} seed(s), online episodes smoothed over {SMOOTH_EPISODES}"
        )
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        caption = (
            f"Per-episode online metrics (exploration included, as published), trailing mean over "
            f"{SMOOTH_EPISODES} episodes; bands: {INTERVAL_NOTE}."
        )
        if comparable and model == "slotted":
            caption += (
                " Dashed: the reference's published curves (own presets; AMCoEdge 500, SMCoEdge 300, "
                "DRLCoEdge 400, RandCoEdge and Optimal 50 episodes), smoothed the same way."
            )
        written += _save(fig, out_dir, f"convergence-{model}", caption)
    return written


def default_figures(
    summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment, out_dir: Path
) -> list[Path]:
    """The default point per setting (`default_figure`) and seed by seed (`seed_spread_figure`)."""
    data = default_point(summary, members, exp)
    if data.empty:
        return []
    return default_figure(data, exp, out_dir) + seed_spread_figure(data, exp, out_dir)


def default_figure(data: pd.DataFrame, exp: Experiment, out_dir: Path) -> list[Path]:
    """Every method at the default point, one bar per setting (mean, bootstrap interval over seeds, and
    each seed's value as a dot)."""
    plt, sns = _setup()
    order = [m for m in exp.methods if m in set(data["method"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, ylabel in (
        (axes[0], "makespan", "mean make-span (s)"),
        (axes[1], "failure_rate", "failure rate"),
    ):
        sns.barplot(
            data=data,
            x="method",
            y=metric,
            hue="setting",
            order=order,
            errorbar=percentile_interval,
            capsize=0.1,
            ax=ax,
            err_kws={"linewidth": 1},
        )
        sns.stripplot(
            data=data, x="method", y=metric, hue="setting", order=order, dodge=True, ax=ax, legend=False,
            palette=dict.fromkeys(data["setting"].unique(), "0.15"), size=3, alpha=0.7, jitter=False,
        )  # fmt: skip
        if metric == "makespan" and comparable_to_published(exp):
            _published_stars(ax, order, published_default(), 90, "published (own preset, last 50)")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"{exp.name}: the default point, {data['seed'].nunique()} seed(s)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    caption = METRIC_NOTE + (
        " Stars: the published CSVs (spec §8.1)." if comparable_to_published(exp) else ""
    )
    return _save(fig, out_dir, "default-point", caption)


def seed_spread_figure(data: pd.DataFrame, exp: Experiment, out_dir: Path) -> list[Path]:
    """The default point seed by seed: one panel per setting, a box and the per-seed values per method."""
    plt, sns = _setup()
    settings = sorted(data["setting"].unique(), key=lambda s: (not s.startswith("slotted"), "common" in s, s))
    order = [m for m in exp.methods if m in set(data["method"])]
    palette = _palette(list(exp.methods))
    comparable = comparable_to_published(exp)
    pub = published_default()
    fig, axes = plt.subplots(1, len(settings), figsize=(4.6 * len(settings), 4.4), squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        rows = data[data["setting"] == setting]
        present = [m for m in order if m in set(rows["method"])]
        sns.boxplot(
            data=rows,
            x="method",
            y="makespan",
            order=present,
            hue="method",
            palette=palette,
            whis=(0, 100),
            showfliers=False,
            width=0.55,
            boxprops={"alpha": 0.35},
            ax=ax,
            legend=False,
        )
        for i, method in enumerate(
            present
        ):  # seeds spread evenly across the box (random jitter is not byte-stable)
            values = rows.loc[rows["method"] == method].sort_values("seed")["makespan"].to_numpy()
            offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(
                i + offsets, values, s=16, color=palette[method], edgecolor="k", linewidth=0.4, zorder=4
            )
        if comparable and setting == "slotted, own preset":
            _published_stars(ax, present, pub, 140, "published (one run each)")
            reruns = rerun_default()
            reruns = reruns[reruns["environment"] == "own preset"]
            xs, ys = [], []
            for i, method in enumerate(present):
                values = reruns.loc[reruns["method"] == method].sort_values("run")["makespan"].tolist()
                xs += [i + 0.36] * len(values)
                ys += values
            if ys:
                _rerun_diamonds(ax, xs, ys, "reference code, rerun here")
            ax.legend(fontsize=7, frameon=False, loc="upper right")
        ax.set_title(setting)
        ax.set_xlabel("")
        ax.set_ylabel("mean make-span (s), one point per seed")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{exp.name}: the default point seed by seed, {data['seed'].nunique()} seed(s)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    caption = (
        f"One point per seed: the mean of the last {LAST_EPISODES} online episodes for learners, of all episodes "
        "for heuristics. Boxes: quartiles and the range of the seeds. Each seed draws its own traces and "
        "density vector, as one run of the reference code does."
    )
    if comparable:
        caption += (
            " Stars: the published CSVs, one run per method (spec §8.1). Diamonds: runs of the reference's "
            "own code, made for this package (docs/reference-rerun.md)."
        )
    return _save(fig, out_dir, "default-seeds", caption)


def start_end_figure(
    summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment, out_dir: Path
) -> list[Path]:
    """Per learner, each own-preset seed's end against its start, the fitted line with its 95 %
    prediction band, and the published run (star) and the reference code's reruns (diamonds)."""
    if not comparable_to_published(exp):
        return []
    pub = published_default()
    runs = start_fit_runs(default_point(summary, members, exp), list(exp.methods), pub)
    if not runs:
        return []
    plt, _ = _setup()
    palette = _palette(list(exp.methods))
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 4.2), squeeze=False)
    for ax, (method, by_source) in zip(axes[0], runs.items()):
        ours, theirs = by_source["ours"], by_source["reference code"]
        start, end = float(pub.loc[method, "first_makespan"]), float(pub.loc[method, "makespan"])
        xs = np.linspace(
            min(ours["first_makespan"].min(), start), max(ours["first_makespan"].max(), start), 50
        )
        lines = [predict_from_start(ours["first_makespan"], ours["makespan"], x) for x in xs]
        ax.plot(xs, [p.predicted for p in lines], color=palette[method], linewidth=1)
        ax.fill_between(
            xs,
            [p.low for p in lines],
            [p.high for p in lines],
            color=palette[method],
            alpha=0.15,
            linewidth=0,
            label="ours: line, 95 % prediction band",
        )
        ax.scatter(
            ours["first_makespan"],
            ours["makespan"],
            s=16,
            color=palette[method],
            edgecolor="k",
            linewidth=0.4,
            zorder=4,
            label=f"ours, {len(ours)} seeds",
        )
        if not theirs.empty:
            _rerun_diamonds(
                ax, theirs["first_makespan"], theirs["makespan"], f"reference code, {len(theirs)} reruns"
            )
        ax.scatter([start], [end], marker="*", s=140, color="k", zorder=6, label="published run")
        ax.set_title(method)
        ax.set_xlabel(f"start: mean make-span of the first {FIRST_EPISODES} episodes (s)")
        ax.set_ylabel(f"end: mean make-span of the last {LAST_EPISODES} episodes (s)")
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.suptitle(f"{exp.name}: each learner's end against its start, own presets")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    caption = (
        "One point per seed. A run's density vector moves its start and its end together, so a single "
        'published run is compared with the line read at its own start (table: "Published runs, given '
        'their start").'
    )
    return _save(fig, out_dir, "start-end", caption)
