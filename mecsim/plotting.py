"""Figures and the results table of a sweep (``mecsim plot EXPERIMENT``).

Reads ``results/<experiment>/`` (the parts written by `mecsim.sweep`) and the experiment
definition, and writes under ``results/<experiment>/``:

* ``figures/sweep-<name>-<model>.{png,svg}`` — mean make-span and failure rate against each
  swept parameter, one line per method, 95 % confidence band over seeds, with the
  published historical sweeps (AMCoEdge, Optimal) overlaid;
* ``figures/convergence-<model>.{png,svg}`` — per-episode online make-span and failure rate
  (smoothed), per method, 95 % band over seeds, with the published curves overlaid;
* ``figures/default-point.{png,svg}`` — every method at the default point, per setting;
* ``figures/default-seeds.{png,svg}`` — the same cells seed by seed (box and points), with the
  published values and the reference code's own reruns marked: where its runs fall among ours;
* ``figures/start-end.{png,svg}`` — each learner's per-seed end against its exploring start,
  with the line read at the published run's start (`mecsim.reproduction`);
* ``table.md`` — the default point: reproduction (own presets), fair comparison (common
  preset), event model, the spread over seeds, the published runs given their start, and
  whether the paper's headline holds.

The per-cell metric is the paper's: the mean over the last `LAST_EPISODES` online
episodes for learners, over all episodes for heuristics (which do not learn). Each seed
gives one value; intervals are Student-t 95 % intervals over seeds.

The published numbers ship with the package (``mecsim/data/published.csv``: the
reference's per-episode curves at the default point; ``published_sweeps.csv``: its
historical sweep tables; ``reference_reruns.csv``: runs of the reference's code made for
this package, see the README).
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .reproduction import predict_from_start
from .results import load
from .sweep import Experiment, load_experiment

LAST_EPISODES = 50
FIRST_EPISODES = 10  # a learner's exploring start (its greedy probability is still below 6 %)
SMOOTH_EPISODES = 10
START_FIT_MIN_RUNS = 6  # fewer runs leave the start-end line's prediction interval uninformative
HEADLINE = {"random": 28.0, "drlcoedge": 17.0, "smcoedge": 12.0}  # README: AMCoEdge's make-span reduction, %
HEADLINE_OPTIMAL_GAP = 2.0  # README: "close to Optimal"; the published CSVs give +2.3 %
TOLERANCE_PP = 5.0  # percentage points within which a measured reduction "matches" the claim
OPTIMAL_GAP_LIMIT = 5.0  # %: AMCoEdge counts as close to Optimal within this gap
PUBLISHED_NAMES = {"random": "RandCoEdge", "optimal": "Optimal", "amcoedge": "AMCoEdge",
                   "smcoedge": "SMCoEdge (k=3)", "drlcoedge": "DRLCoEdge"}
AXIS_LABELS = {
    "deadline": "deadline (s)",
    "arrival_prob": "arrival probability p",
    "tasks_per_slot": "task slots per BS per time slot N",
    "capacities": "largest ES capacity F (GHz); capacities linspace(10, F, 5)",
}
METRIC_NOTE = (
    f"Per seed: mean of the last {LAST_EPISODES} online episodes for learners (the paper's metric), "
    f"of all episodes for heuristics; failed tasks count at the deadline. "
    f"Lines: mean over seeds; bands/bars: 95% t-interval over seeds."
)


# -- data ----------------------------------------------------------------------------------------
def published() -> pd.DataFrame:
    """The reference's published per-episode curves at the default point (method, episode, make-span, failure)."""
    with resources.files("mecsim").joinpath("data/published.csv").open() as fh:
        return pd.read_csv(fh)


def published_sweeps() -> pd.DataFrame:
    """The reference's historical sweep tables (AMCoEdge and Optimal; reference spec §8.3)."""
    with resources.files("mecsim").joinpath("data/published_sweeps.csv").open() as fh:
        return pd.read_csv(fh)


def reference_reruns() -> pd.DataFrame:
    """Runs of the reference's own code at the default point (``mecsim/data/reference_reruns.csv``).

    Columns: method, environment (``own preset``: the reference code of the method's published
    environment, which our own preset reproduces; otherwise the code version), run, episode,
    mean_makespan, failure_rate. The README section "The reference code, rerun" says how they were made.
    """
    with resources.files("mecsim").joinpath("data/reference_reruns.csv").open() as fh:
        return pd.read_csv(fh)


def curve_metrics(curves: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per learning curve (one per ``keys`` group): make-span and failure rate over the last
    `LAST_EPISODES` episodes (the learners' per-run metric), the make-span over the first
    `FIRST_EPISODES` (``first_makespan``) and the number of episodes."""
    curves = curves.sort_values([*keys, "episode"])
    groups = curves.groupby(keys)
    out = groups.tail(LAST_EPISODES).groupby(keys).agg(
        makespan=("mean_makespan", "mean"), failure_rate=("failure_rate", "mean"))
    out["first_makespan"] = groups.head(FIRST_EPISODES).groupby(keys)["mean_makespan"].mean()
    out["episodes"] = groups.size()
    return out


def rerun_default() -> pd.DataFrame:
    """One row per rerun of the reference code, with `curve_metrics` as for our cells."""
    return curve_metrics(reference_reruns(), ["method", "environment", "run"]).reset_index()


def published_default() -> pd.DataFrame:
    """Per method: `curve_metrics` of the published curve (the make-span: mean of its last 50 episodes)."""
    return curve_metrics(published(), ["method"])


def comparable_to_published(exp: Experiment) -> bool:
    """Whether the experiment's default point is the published one (so the published numbers apply)."""
    from .config import Scenario, build_scenario

    ignore = {"model", "preset", "variant", "seed", "deadline_policy", "link_topology"}
    ours = build_scenario(exp.scenario).model_dump(mode="json", exclude=ignore)
    return ours == Scenario().model_dump(mode="json", exclude=ignore)


def t_interval(values: Any) -> tuple[float, float]:
    """Student-t 95 % interval of the mean (NaN bounds with fewer than two values)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        m = float(x.mean()) if x.size else math.nan
        return (m, m) if x.size else (math.nan, math.nan)
    from scipy import stats

    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()) - half, float(x.mean()) + half


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the paper's per-seed metric (make-span, failure rate), greedy-eval means, parameters."""
    online = df[df["phase"] == "online"].sort_values(["cell_id", "episode"])
    learner = online["method_kind"] == "learner"
    last = online[learner].groupby("cell_id").tail(LAST_EPISODES)
    used = pd.concat([last, online[~learner]])
    agg = used.groupby("cell_id").agg(
        makespan=("mean_makespan", "mean"), failure_rate=("failure_rate", "mean"), episodes_used=("episode", "size")
    )
    agg["first_makespan"] = online.groupby("cell_id").head(FIRST_EPISODES).groupby("cell_id")["mean_makespan"].mean()
    ev = df[df["phase"] == "eval"].groupby("cell_id").agg(
        eval_makespan=("mean_makespan", "mean"), eval_failure_rate=("failure_rate", "mean")
    )
    first = df.drop_duplicates("cell_id").set_index("cell_id")
    keep = [c for c in first.columns if c not in {
        "episode", "phase", "mean_makespan", "failure_rate", "mean_latency", "p50_latency", "p95_latency",
        "p99_latency", "n_tasks", "n_failed", "mean_reward", "utilisation", "mean_utilisation", "wall_time_s",
    }]
    out = first[keep].join(agg).join(ev)
    out["capacity_max"] = out["capacities"].map(lambda c: float(max(c)))
    return out.reset_index()


def with_settings(rows: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """Rows tagged with their setting: "<model>, own preset" / "<model>, common preset" / "<model>, preset X".

    A method whose own preset is the common one (AMCoEdge) appears under both.
    """
    own = rows["method"].map(lambda m: exp.methods[m].preset if m in exp.methods else None)
    frames = []
    is_own = rows["preset"] == own
    is_common = rows["preset"] == exp.common_preset
    models_with_own = set(rows.loc[is_own & ~is_common, "model"])
    is_own &= ~is_common | rows["model"].isin(models_with_own)
    frames.append(rows[is_own].assign(setting=rows["model"] + ", own preset"))
    frames.append(rows[is_common].assign(setting=rows["model"] + f", common preset ({exp.common_preset})"))
    other = rows[~is_own & ~is_common]
    frames.append(other.assign(setting=other["model"] + ", preset " + other["preset"]))
    return pd.concat(frames, ignore_index=True)


# -- figures -------------------------------------------------------------------------------------
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
                    data=part, x="swept_value", y=metric, hue="method", style="preset" if presets > 1 else None,
                    errorbar=t_interval, err_style="band", marker="o", palette=palette, ax=ax,
                    hue_order=[m for m in exp.methods if m in set(part["method"])],
                )
                published_rows = pub[pub["sweep"] == name] if comparable else pub.iloc[:0]
                if model == "slotted" and not published_rows.empty:
                    for method, rows in published_rows.groupby("method"):
                        ax.plot(rows["swept_value"], rows[pub_col], linestyle=":", marker="D", markersize=4,
                                markerfacecolor="none", color=palette.get(method, "k"),
                                label=f"published {PUBLISHED_NAMES.get(method, method)} (historical)")
                ax.set_xlabel(AXIS_LABELS.get(parameter, parameter))
                ax.set_ylabel(ylabel)
            _figure_legend(fig, axes)
            fig.suptitle(f"{exp.name}: {name} sweep, {model} model, preset "
                         f"{', '.join(sorted(part['preset'].unique()))}, {n_seeds} seed(s)")
            fig.tight_layout(rect=(0, 0.07, 1, 1))
            caption = METRIC_NOTE
            if comparable and model == "slotted" and not pub[pub["sweep"] == name].empty:
                caption += (" Dotted hollow diamonds: the reference's historical sweep files (AMCoEdge first commit; "
                            "AMCoEdge last 50 of 300-500 episodes, Optimal 20 episodes), spec §8.3")
                if name == "capacity":
                    caption += "; their capacity vectors are unknown (tags f20-f80), so compare shapes only"
                caption += "."
            written += _save(fig, out_dir, f"sweep-{name}-{model}", caption)
    return written


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend for the whole figure, right of the panels (labels deduplicated across panels)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(text, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.legend(list(entries.values()), list(entries), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7,
               frameon=False)


def _smoothed(df: pd.DataFrame, keys: list[str], window: int) -> pd.DataFrame:
    df = df.sort_values(keys + ["episode"]).copy()
    for col in ("mean_makespan", "failure_rate"):
        df[col] = df.groupby(keys)[col].transform(lambda s: s.rolling(window, min_periods=1).mean())
    return df


def _band(df: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    g = df.groupby(by)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    from scipy import stats

    t = stats.t.ppf(0.975, np.maximum(out["count"] - 1, 1))
    half = np.where(out["count"] > 1, t * out["std"] / np.sqrt(out["count"]), np.nan)
    out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out


def convergence_figures(df: pd.DataFrame, members: pd.DataFrame, exp: Experiment, out_dir: Path) -> list[Path]:
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
        fig, axes = plt.subplots(2, len(settings), figsize=(5.2 * len(settings), 7), squeeze=False, sharex=True)
        for col, setting in enumerate(settings):
            rows = smooth[smooth["setting"] == setting]
            for r, (metric, ylabel) in enumerate((("mean_makespan", "mean make-span (s)"), ("failure_rate", "failure rate"))):
                ax = axes[r][col]
                band = _band(rows, ["method", "episode"], metric)
                for method in [m for m in exp.methods if m in set(band["method"])]:
                    b = band[band["method"] == method]
                    sns.lineplot(x=b["episode"], y=b["mean"], color=palette[method], label=method, ax=ax, errorbar=None)
                    ax.fill_between(b["episode"], b["lo"], b["hi"], color=palette[method], alpha=0.2, linewidth=0)
                if comparable and model == "slotted" and "own" in setting:
                    for method in [m for m in exp.methods if m in set(band["method"])]:
                        p = pub[pub["method"] == method]
                        if not p.empty:
                            ax.plot(p["episode"], p[metric], linestyle="--", linewidth=0.9, color=palette[method],
                                    alpha=0.8, label=f"published {PUBLISHED_NAMES.get(method, method)}")
                ax.set_ylabel(ylabel)
                ax.set_xlabel("episode")
                ax.set_title(setting if r == 0 else "")
        _figure_legend(fig, axes.ravel())
        fig.suptitle(f"{exp.name}: convergence at the default point ({model} model), "
                     f"{part['seed'].nunique()} seed(s), online episodes smoothed over {SMOOTH_EPISODES}")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        caption = (f"Per-episode online metrics (exploration included, as published), trailing mean over "
                   f"{SMOOTH_EPISODES} episodes; bands: 95% t-interval over seeds.")
        if comparable and model == "slotted":
            caption += (" Dashed: the reference's published curves (own presets; AMCoEdge 500, SMCoEdge 300, "
                        "DRLCoEdge 400, RandCoEdge and Optimal 50 episodes), smoothed the same way.")
        written += _save(fig, out_dir, f"convergence-{model}", caption)
    return written


def default_point(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """The cells of the experiment's default sweep, tagged with their setting (see `with_settings`)."""
    ids = set(members.loc[members["sweep"] == "default", "cell_id"])
    return with_settings(summary[summary["cell_id"].isin(ids)], exp)


def default_figure(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment, out_dir: Path) -> list[Path]:
    plt, sns = _setup()
    data = default_point(summary, members, exp)
    if data.empty:
        return []
    order = [m for m in exp.methods if m in set(data["method"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, ylabel in ((axes[0], "makespan", "mean make-span (s)"), (axes[1], "failure_rate", "failure rate")):
        sns.barplot(data=data, x="method", y=metric, hue="setting", order=order, errorbar=t_interval,
                    capsize=0.1, ax=ax, err_kws={"linewidth": 1})
        if metric == "makespan" and comparable_to_published(exp):
            pub = published_default()
            xs = [i for i, m in enumerate(order) if m in pub.index]
            ax.scatter(xs, [pub.loc[order[i], "makespan"] for i in xs], marker="*", s=90, color="k", zorder=5,
                       label="published (own preset, last 50)")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"{exp.name}: the default point, {data['seed'].nunique()} seed(s)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    caption = METRIC_NOTE + (" Stars: the published CSVs (spec §8.1)." if comparable_to_published(exp) else "")
    return _save(fig, out_dir, "default-point", caption)


def seed_spread_figure(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment, out_dir: Path) -> list[Path]:
    """The default point seed by seed: one panel per setting, a box and the per-seed values per method."""
    plt, sns = _setup()
    data = default_point(summary, members, exp)
    if data.empty:
        return []
    settings = sorted(data["setting"].unique(), key=lambda s: (not s.startswith("slotted"), "common" in s, s))
    order = [m for m in exp.methods if m in set(data["method"])]
    palette = _palette(list(exp.methods))
    comparable = comparable_to_published(exp)
    pub = published_default()
    fig, axes = plt.subplots(1, len(settings), figsize=(4.6 * len(settings), 4.4), squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        rows = data[data["setting"] == setting]
        present = [m for m in order if m in set(rows["method"])]
        sns.boxplot(data=rows, x="method", y="makespan", order=present, hue="method", palette=palette,
                    whis=(0, 100), showfliers=False, width=0.55, boxprops={"alpha": 0.35}, ax=ax,
                    legend=False)
        for i, method in enumerate(present):  # seeds spread evenly across the box (random jitter is not byte-stable)
            values = rows.loc[rows["method"] == method].sort_values("seed")["makespan"].to_numpy()
            offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(i + offsets, values, s=16, color=palette[method], edgecolor="k", linewidth=0.4, zorder=4)
        if comparable and setting == "slotted, own preset":
            xs = [i for i, m in enumerate(present) if m in pub.index]
            ax.scatter(xs, [pub.loc[present[i], "makespan"] for i in xs], marker="*", s=140, color="k", zorder=5,
                       label="published (one run each)")
            reruns = rerun_default()
            reruns = reruns[reruns["environment"] == "own preset"]
            xs, ys = [], []
            for i, method in enumerate(present):
                values = reruns.loc[reruns["method"] == method].sort_values("run")["makespan"].tolist()
                xs += [i + 0.36] * len(values)
                ys += values
            if ys:
                ax.scatter(xs, ys, marker="D", s=18, facecolor="none", edgecolor="k", linewidth=0.8, zorder=5,
                           label="reference code, rerun here")
            ax.legend(fontsize=7, frameon=False, loc="upper right")
        ax.set_title(setting)
        ax.set_xlabel("")
        ax.set_ylabel("mean make-span (s), one point per seed")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{exp.name}: the default point seed by seed, {data['seed'].nunique()} seed(s)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    caption = (f"One point per seed: the mean of the last {LAST_EPISODES} online episodes for learners, of all episodes "
               "for heuristics. Boxes: quartiles and the range of the seeds. Each seed draws its own traces and "
               "density vector, as one run of the reference code does.")
    if comparable:
        caption += (" Stars: the published CSVs, one run per method (spec §8.1). Diamonds: runs of the reference's "
                    "own code, made for this package (README, \"The reference code, rerun\").")
    return _save(fig, out_dir, "default-seeds", caption)


def start_fit_runs(tagged: pd.DataFrame, methods: list[str], published: pd.DataFrame
                   ) -> dict[str, dict[str, pd.DataFrame]]:
    """Per learner of ``methods`` with a published curve and at least `START_FIT_MIN_RUNS` own-preset
    seeds, in that order: its own-preset runs (start ``first_makespan``, end ``makespan``), ours
    (``"ours"``) and the reference code's reruns (``"reference code"``, possibly empty)."""
    ours = tagged[(tagged["setting"] == "slotted, own preset") & (tagged["method_kind"] == "learner")]
    reruns = rerun_default()
    reruns = reruns[reruns["environment"] == "own preset"]
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for method in [m for m in methods if m in set(ours["method"]) and m in published.index]:
        runs = {"ours": ours[ours["method"] == method], "reference code": reruns[reruns["method"] == method]}
        runs = {name: r.dropna(subset=["makespan", "first_makespan"]) for name, r in runs.items()}
        if len(runs["ours"]) >= START_FIT_MIN_RUNS:
            out[method] = runs
    return out


def start_end_figure(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment, out_dir: Path) -> list[Path]:
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
        xs = np.linspace(min(ours["first_makespan"].min(), start), max(ours["first_makespan"].max(), start), 50)
        lines = [predict_from_start(ours["first_makespan"], ours["makespan"], x) for x in xs]
        ax.plot(xs, [p.predicted for p in lines], color=palette[method], linewidth=1)
        ax.fill_between(xs, [p.low for p in lines], [p.high for p in lines], color=palette[method], alpha=0.15,
                        linewidth=0, label="ours: line, 95 % prediction band")
        ax.scatter(ours["first_makespan"], ours["makespan"], s=16, color=palette[method], edgecolor="k",
                   linewidth=0.4, zorder=4, label=f"ours, {len(ours)} seeds")
        if not theirs.empty:
            ax.scatter(theirs["first_makespan"], theirs["makespan"], marker="D", s=18, facecolor="none",
                       edgecolor="k", linewidth=0.8, zorder=5, label=f"reference code, {len(theirs)} reruns")
        ax.scatter([start], [end], marker="*", s=140, color="k", zorder=6, label="published run")
        ax.set_title(method)
        ax.set_xlabel(f"start: mean make-span of the first {FIRST_EPISODES} episodes (s)")
        ax.set_ylabel(f"end: mean make-span of the last {LAST_EPISODES} episodes (s)")
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.suptitle(f"{exp.name}: each learner's end against its start, own presets")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    caption = ("One point per seed. A run's density vector moves its start and its end together, so a single "
               "published run is compared with the line read at its own start (table: \"Published runs, given "
               "their start\").")
    return _save(fig, out_dir, "start-end", caption)


def seed_spread(rows: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method, the spread of the per-seed make-spans of ``rows`` (one row per cell).

    ``gain``: the per-seed ratio of the make-span to the mean of the first `FIRST_EPISODES`
    online episodes (for a learner, its exploring start), averaged over seeds. A seed's
    density vector moves both alike, so the ratio compares learners across runs better
    than the make-span does.

    With ``published`` (indexed by method, columns ``makespan`` and ``first_makespan``):
    the published make-span and gain, and how many seeds are at or below the published
    make-span; a published run that beats nearly every seed of a faithful model is a lucky
    (or selected) run.
    """
    out = []
    for method, r in rows.groupby("method", sort=False):
        r = r.dropna(subset=["makespan"])
        x = r["makespan"]
        has_pub = published is not None and method in published.index
        pub = float(published.loc[method, "makespan"]) if has_pub else math.nan
        pub_first = float(published.loc[method, "first_makespan"]) if has_pub else math.nan
        out.append({
            "method": method, "seeds": int(x.size), "mean": float(x.mean()), "sd": float(x.std(ddof=1)),
            "min": float(x.min()), "median": float(x.median()), "max": float(x.max()),
            "gain": float((x / r["first_makespan"]).mean()), "published": pub, "published_gain": pub / pub_first,
            "at_or_below_published": int((x <= pub).sum()) if has_pub else None,
        })
    return pd.DataFrame(out)


# -- table ---------------------------------------------------------------------------------------
def _fmt(values: pd.Series, digits: int = 4) -> str:
    x = values.dropna()
    if x.empty:
        return "n/a"
    lo, hi = t_interval(x)
    mean = float(x.mean())
    if x.size < 2:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.1f} %"


def _reduction(amc: float, other: float) -> float:
    """AMCoEdge's make-span relative to another method's, in % (negative = AMCoEdge lower)."""
    if not (math.isfinite(amc) and math.isfinite(other)) or other == 0:
        return math.nan
    return 100.0 * (amc - other) / other


def _means(rows: pd.DataFrame) -> dict[str, float]:
    return rows.groupby("method")["makespan"].mean().to_dict()


def results_table(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment) -> str:
    tagged = default_point(summary, members, exp)
    pub = published_default()
    methods = [m for m in exp.methods if m in set(tagged["method"])]
    seeds = sorted(tagged["seed"].unique().tolist())
    lines = [
        f"# {exp.name}: results at the default point",
        "",
        f"{exp.description}. Seeds {seeds}; engine `{exp.engine}`. Scenario: "
        + ", ".join(f"{k} = {v}" for k, v in exp.scenario.items()) + ".",
        "",
        METRIC_NOTE + " Greedy eval: the learner after training, exploration off, fresh traces "
        f"({exp.eval_episodes} episodes). Published: the reference's CSVs, mean of their last 50 episodes "
        "(each method on its own environment preset).",
        "",
    ]

    def section(title: str, rows: pd.DataFrame, with_published: bool) -> dict[str, float]:
        lines.extend([f"## {title}", ""])
        if rows.empty:
            lines.extend(["(no cells)", ""])
            return {}
        header = "| method | preset | episodes | make-span (s) | failure rate | greedy eval make-span (s) |"
        rule = "|---|---|---|---|---|---|"
        if with_published:
            header += " published make-span (s) | ours vs published |"
            rule += "---|---|"
        header += " AMCoEdge vs this (− = AMCoEdge lower) |"
        rule += "---|"
        lines.extend([header, rule])
        means = _means(rows)
        amc = means.get("amcoedge", math.nan)
        for method in methods:
            r = rows[rows["method"] == method]
            if r.empty:
                continue
            cells = [
                method, ", ".join(sorted(r["preset"].unique())), str(int(r["episodes_planned"].iloc[0])),
                _fmt(r["makespan"]), _fmt(r["failure_rate"]), _fmt(r["eval_makespan"]) if r["eval_makespan"].notna().any() else "–",
            ]
            if with_published:
                if method in pub.index:
                    p = float(pub.loc[method, "makespan"])
                    cells += [f"{p:.4f}", _pct(100.0 * (means[method] - p) / p)]
                else:
                    cells += ["–", "–"]
            cells.append("–" if method == "amcoedge" else _pct(_reduction(amc, means[method])))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        return means

    own_rows = tagged[tagged["setting"] == "slotted, own preset"]
    common_rows = tagged[tagged["setting"] == f"slotted, common preset ({exp.common_preset})"]
    event_rows = tagged[tagged["setting"] == f"event, common preset ({exp.common_preset})"]
    comparable = comparable_to_published(exp)
    if not comparable:
        lines.extend([
            "**Note:** this experiment's default point is not the published one (f = [10, 20, 30, 40, 50], "
            "N = 50, p = 0.3, deadline 1.0 s, 61 slots), so its numbers are not comparable with the published ones; "
            "the published columns and the headline check are shown for the layout only.",
            "",
        ])
    own = section("Reproduction: each method on its own published preset (slotted model)", own_rows, comparable)
    common = section(f"Fair comparison: every method on the common preset `{exp.common_preset}` (slotted model)",
                     common_rows, False)
    event = section(f"Event model (FIFO queues and links), common preset `{exp.common_preset}`", event_rows, False)
    spread_section(lines, tagged, methods, pub if comparable else None)
    if comparable:
        start_section(lines, tagged, methods, pub)

    pub_means = pub["makespan"].to_dict()
    columns = [("published CSVs", pub_means), ("ours, own presets", own), ("ours, common preset", common),
               ("ours, event model", event)]
    lines.extend([
        "## Does the headline hold?",
        "",
        "Claim (AMCoEdge README / papers): AMCoEdge's average make-span is about 28 %, 17 % and 12 % lower than "
        "RandCoEdge's, DRLCoEdge's and SMCoEdge's, and close to (within about 2 % of) Optimal's.",
        "",
        "| AMCoEdge make-span vs | claimed | " + " | ".join(name for name, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ])
    for method, claim in HEADLINE.items():
        cells = [_pct(_reduction(m.get("amcoedge", math.nan), m.get(method, math.nan))) for _, m in columns]
        lines.append(f"| {method} | {-claim:+.0f} % | " + " | ".join(cells) + " |")
    cells = [_pct(_reduction(m.get("amcoedge", math.nan), m.get("optimal", math.nan))) for _, m in columns]
    lines.append(f"| optimal | ≈ +{HEADLINE_OPTIMAL_GAP:.0f} % | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Rule: the headline *holds* in a setting when AMCoEdge's reduction against each baseline is within "
        f"{TOLERANCE_PP:.0f} percentage points of the claim and its gap to Optimal is at most {OPTIMAL_GAP_LIMIT:.0f} %; "
        "it holds *qualitatively* when AMCoEdge beats every baseline and stays within that gap of Optimal but the "
        "margins differ more; otherwise it does not hold. Means over seeds; the per-method intervals are in the "
        "tables above."
    )
    lines.append("")
    for name, means in columns[1:]:
        lines.append(f"* {name}: {verdict(means)}")
    lines.append("")
    return "\n".join(lines)


def spread_section(lines: list[str], tagged: pd.DataFrame, methods: list[str], published: pd.DataFrame | None) -> None:
    """The "Spread over seeds" table: per setting and method, the distribution of the per-seed values."""
    lines.extend([
        "## Spread over seeds",
        "",
        "Per-seed make-spans (s). Each seed draws its own traces and density vector, as one run of the reference "
        "code does; a published number is one such run. \"≤ published\": the seeds whose value is at or below the "
        f"published one (own presets only). Gain: the make-span over the mean of the first {FIRST_EPISODES} online "
        "episodes (a learner's exploring start), mean over seeds; a seed's density vector moves both alike.",
        "",
        "| setting | method | seeds | mean | SD | min | median | max | published | ≤ published | gain | published gain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ])
    for setting, rows in tagged.groupby("setting", sort=True):
        own = setting == "slotted, own preset"
        spread = seed_spread(rows, published if own else None).set_index("method")
        for method in [m for m in methods if m in spread.index]:
            lines.append(_spread_row(setting, method, spread.loc[method]))
    if published is not None:
        rerun_rows(lines, tagged, methods, published)
    lines.append("")


def _spread_row(setting: str, method: str, r: pd.Series) -> str:
    """One row of the spread table from a `seed_spread` row."""
    sd = "–" if r["seeds"] < 2 else f"{r['sd']:.4f}"
    has_pub = math.isfinite(r["published"])
    pub = f"{r['published']:.4f}" if has_pub else "–"
    below = f"{int(r['at_or_below_published'])} / {int(r['seeds'])}" if has_pub else "–"
    pub_gain = f"{r['published_gain']:.3f}" if has_pub else "–"
    return (f"| {setting} | {method} | {int(r['seeds'])} | {r['mean']:.4f} | {sd} | {r['min']:.4f} | "
            f"{r['median']:.4f} | {r['max']:.4f} | {pub} | {below} | {r['gain']:.3f} | {pub_gain} |")


def rerun_rows(lines: list[str], tagged: pd.DataFrame, methods: list[str], published: pd.DataFrame) -> None:
    """The reference code's own runs as rows of the spread table (seeds = runs), then, per method with
    reruns of its own environment, a Mann-Whitney test of our own-preset seeds against them."""
    from scipy import stats

    reruns = rerun_default().rename(columns={"run": "seed"})
    tests = []
    for environment, rows in reruns.groupby("environment", sort=True):
        spread = seed_spread(rows, published).set_index("method")
        for method in [m for m in methods if m in spread.index]:
            lines.append(_spread_row(f"reference code rerun, {environment}", method, spread.loc[method]))
            if environment != "own preset":
                continue
            ours = tagged.loc[(tagged["setting"] == "slotted, own preset") & (tagged["method"] == method), "makespan"]
            theirs = rows.loc[rows["method"] == method, "makespan"]
            if ours.size >= 2:
                p = stats.mannwhitneyu(ours, theirs, alternative="two-sided").pvalue
                tests.append(f"{method}: ours {ours.mean():.4f} over {ours.size} seeds, the reference code "
                             f"{theirs.mean():.4f} over {theirs.size} runs, Mann-Whitney p = {p:.2f}")
    if tests:
        lines.extend(["", "Own preset, ours against the reference code's reruns: " + "; ".join(tests) + "."])


def start_section(lines: list[str], tagged: pd.DataFrame, methods: list[str], published: pd.DataFrame) -> None:
    """The "Published runs, given their start" table: per learner and source of runs (ours, the
    reference code's reruns), the end predicted at the published run's start, and the published end."""
    rows = []
    for method, by_source in start_fit_runs(tagged, methods, published).items():
        start, end = float(published.loc[method, "first_makespan"]), float(published.loc[method, "makespan"])
        for source, runs in by_source.items():
            if len(runs) < START_FIT_MIN_RUNS:
                continue
            fit = predict_from_start(runs["first_makespan"], runs["makespan"], start)
            rows.append(f"| {method} | {source} | {fit.runs} | {runs['first_makespan'].min():.4f}–"
                        f"{runs['first_makespan'].max():.4f} | {fit.slope:.2f} | {fit.r:.2f} | {start:.4f} | "
                        f"{fit.predicted:.4f} ({fit.low:.4f}–{fit.high:.4f}) | {end:.4f} | {fit.p_value(end):.2f} |")
    if not rows:
        return
    lines.extend([
        "## Published runs, given their start",
        "",
        "A run draws its density vector once, so its start (the mean make-span of its first "
        f"{FIRST_EPISODES} online episodes, a near-random policy) and its end (the last {LAST_EPISODES}) move "
        "together. Per learner: the least-squares line end = a + b·start over the own-preset runs, read at the "
        "published run's start, with the 95 % prediction interval for one run; p: two-sided t-test of the "
        "published end against it. Figure: `figures/start-end`.",
        "",
        "| method | runs | n | starts | slope b | r | published start | predicted end (95 % PI) | published end | p |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])


def verdict(means: dict[str, float]) -> str:
    """Whether the headline holds for one setting's per-method mean make-spans (see `results_table`)."""
    amc = means.get("amcoedge", math.nan)
    if not math.isfinite(amc):
        return "not assessed (no AMCoEdge cells)."
    missing = [m for m in [*HEADLINE, "optimal"] if not math.isfinite(means.get(m, math.nan))]
    reductions = {m: -_reduction(amc, means[m]) for m in HEADLINE if m not in missing}
    gap = _reduction(amc, means["optimal"]) if "optimal" not in missing else math.nan
    beats = all(r > 0 for r in reductions.values())
    close = all(abs(r - HEADLINE[m]) <= TOLERANCE_PP for m, r in reductions.items())
    near_opt = math.isfinite(gap) and gap <= OPTIMAL_GAP_LIMIT
    detail = ", ".join(
        f"{abs(r):.1f} % {'below' if r >= 0 else 'above'} {m} (claimed {HEADLINE[m]:.0f} % below)"
        for m, r in reductions.items()
    )
    if math.isfinite(gap):
        detail += (", " if detail else "") + f"{gap:+.1f} % vs optimal"
    if missing:
        word = f"**not assessed** (no cells for {', '.join(missing)})"
    elif beats and close and near_opt:
        word = "**holds**"
    elif beats and near_opt:
        word = "**holds qualitatively** (AMCoEdge beats every baseline, near Optimal, margins differ)"
    else:
        losers = [m for m, r in reductions.items() if r <= 0]
        why = []
        if losers:
            why.append(f"AMCoEdge does not beat {', '.join(losers)}")
        if not near_opt and math.isfinite(gap):
            why.append(f"gap to Optimal {gap:+.1f} % > {OPTIMAL_GAP_LIMIT:.0f} %")
        word = "**does not hold**" + (f" ({'; '.join(why)})" if why else "")
    return f"{word}: {detail}."


# -- entry point ---------------------------------------------------------------------------------
def plot_experiment(
    experiment: str | Path | Experiment, results_dir: str | Path = "results", echo: Callable[[str], None] = print
) -> list[Path]:
    """All figures and ``table.md`` of a sweep; returns the written paths."""
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    out = Path(results_dir) / exp.name
    df = load(out)
    cells = exp.cells()
    members = exp.memberships(cells)
    known = set(members["cell_id"])
    extra = set(df["cell_id"]) - known
    if extra:
        echo(f"note: ignoring {len(extra)} part(s) that the current definition of {exp.name!r} does not list")
        df = df[df["cell_id"].isin(known)]
    missing = known - set(df["cell_id"])
    if missing:
        echo(f"note: {len(missing)} of {len(known)} cells have no results yet; the figures show the finished ones")
    summary = summarise(df)
    figures = out / "figures"
    written = []
    written += sweep_figures(summary, members, exp, figures)
    written += convergence_figures(df, members, exp, figures)
    written += default_figure(summary, members, exp, figures)
    written += seed_spread_figure(summary, members, exp, figures)
    written += start_end_figure(summary, members, exp, figures)
    table = out / "table.md"
    text = results_table(summary, members, exp)
    text += "\n## Figures\n\n" + "\n".join(
        f"* `figures/{p.name}`" for p in written if p.suffix == ".png"
    ) + f"\n\n{METRIC_NOTE}\n"
    tmp = table.with_name(f".{table.name}.tmp")
    tmp.write_text(text)
    tmp.replace(table)
    written.append(table)
    return written
