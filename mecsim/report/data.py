"""The data behind the report: the published numbers that ship with the package, and one row per cell.

The published numbers ship in ``mecsim/data/``: ``published.csv`` (the reference's
per-episode curves at the default point), ``published_sweeps.csv`` (its historical sweep
tables) and ``reference_reruns.csv`` (runs of the reference's own code made for this
package; ``docs/reference-rerun.md`` says how).

The per-cell metric is the paper's: the mean over the last `LAST_EPISODES` online
episodes for learners, over all episodes for heuristics (which do not learn).
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from ..config import Scenario, build_scenario
from ..sweep import Experiment
from .stats import INTERVAL_NOTE

LAST_EPISODES = 50
FIRST_EPISODES = 10  # a learner's exploring start (its greedy probability is still below 6 %)
START_FIT_MIN_RUNS = 6  # fewer runs leave the start-end line's prediction interval uninformative
METRIC_NOTE = (
    f"Per seed: mean of the last {LAST_EPISODES} online episodes for learners (the paper's metric), "
    f"of all episodes for heuristics; failed tasks count at the deadline. "
    f"Lines: mean over seeds; intervals (bands, bars, [low, high] in tables): {INTERVAL_NOTE}; "
    f"dots: one seed each."
)


def _csv(name: str) -> pd.DataFrame:
    with resources.files("mecsim").joinpath(f"data/{name}").open() as fh:
        return pd.read_csv(fh)


def published() -> pd.DataFrame:
    """The reference's published per-episode curves at the default point (method, episode, make-span, failure)."""
    return _csv("published.csv")


def published_sweeps() -> pd.DataFrame:
    """The reference's historical sweep tables (AMCoEdge and Optimal; reference spec §8.3)."""
    return _csv("published_sweeps.csv")


def reference_reruns() -> pd.DataFrame:
    """Runs of the reference's own code at the default point (``mecsim/data/reference_reruns.csv``).

    Columns: method, environment (``own preset``: the reference code of the method's published
    environment, which our own preset reproduces; otherwise the code version), run, episode,
    mean_makespan, failure_rate. ``docs/reference-rerun.md`` says how they were made.
    """
    return _csv("reference_reruns.csv")


def curve_metrics(curves: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per learning curve (one per ``keys`` group): make-span and failure rate over the last
    `LAST_EPISODES` episodes (the learners' per-run metric), the make-span over the first
    `FIRST_EPISODES` (``first_makespan``) and the number of episodes."""
    curves = curves.sort_values([*keys, "episode"])
    groups = curves.groupby(keys)
    out = (
        groups.tail(LAST_EPISODES)
        .groupby(keys)
        .agg(makespan=("mean_makespan", "mean"), failure_rate=("failure_rate", "mean"))
    )
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
    ignore = {"model", "preset", "variant", "seed", "deadline_policy", "link_topology"}
    ours = build_scenario(exp.scenario).model_dump(mode="json", exclude=ignore)
    return ours == Scenario().model_dump(mode="json", exclude=ignore)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the paper's per-seed metric (make-span, failure rate), greedy-eval means, parameters."""
    online = df[df["phase"] == "online"].sort_values(["cell_id", "episode"])
    learner = online["method_kind"] == "learner"
    last = online[learner].groupby("cell_id").tail(LAST_EPISODES)
    used = pd.concat([last, online[~learner]])
    agg = used.groupby("cell_id").agg(
        makespan=("mean_makespan", "mean"),
        failure_rate=("failure_rate", "mean"),
        episodes_used=("episode", "size"),
    )
    agg["first_makespan"] = (
        online.groupby("cell_id").head(FIRST_EPISODES).groupby("cell_id")["mean_makespan"].mean()
    )
    ev = (
        df[df["phase"] == "eval"]
        .groupby("cell_id")
        .agg(eval_makespan=("mean_makespan", "mean"), eval_failure_rate=("failure_rate", "mean"))
    )
    first = df.drop_duplicates("cell_id").set_index("cell_id")
    keep = [
        c
        for c in first.columns
        if c
        not in {
            "episode",
            "phase",
            "mean_makespan",
            "failure_rate",
            "mean_latency",
            "p50_latency",
            "p95_latency",
            "p99_latency",
            "n_tasks",
            "n_failed",
            "mean_reward",
            "utilisation",
            "mean_utilisation",
            "wall_time_s",
        }
    ]
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
    # each setting from its own rows' columns: a Series of all rows assigned to an empty subset would add NaN rows
    mine, common, other = rows[is_own], rows[is_common], rows[~is_own & ~is_common]
    frames.append(mine.assign(setting=mine["model"] + ", own preset"))
    frames.append(common.assign(setting=common["model"] + f", common preset ({exp.common_preset})"))
    frames.append(other.assign(setting=other["model"] + ", preset " + other["preset"]))
    return pd.concat(frames, ignore_index=True)


def default_point(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """The cells of the experiment's default sweep, tagged with their setting (see `with_settings`)."""
    ids = set(members.loc[members["sweep"] == "default", "cell_id"])
    return with_settings(summary[summary["cell_id"].isin(ids)], exp)


def start_fit_runs(
    tagged: pd.DataFrame, methods: list[str], published: pd.DataFrame
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
