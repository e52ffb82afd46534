"""The results table of a sweep (``table.md``): the default point in every setting, the spread over
seeds, the published runs given their start, and the headline claims."""

from __future__ import annotations

import math

import pandas as pd

from ..sweep import Experiment
from .claims import headline_section, paired_reduction, pct, reduction
from .data import (
    FIRST_EPISODES,
    LAST_EPISODES,
    METRIC_NOTE,
    START_FIT_MIN_RUNS,
    comparable_to_published,
    default_point,
    published_default,
    rerun_default,
    start_fit_runs,
)
from .stats import percentile_interval, predict_from_start, seed_spread


def _fmt(values: pd.Series, digits: int = 4) -> str:
    x = values.dropna()
    if x.empty:
        return "n/a"
    lo, hi = percentile_interval(x)
    mean = float(x.mean())
    if x.size < 2:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _paired(rows: pd.DataFrame, method: str, amc: float, other: float) -> str:
    """AMCoEdge's make-span against ``method``'s: the difference of the means over seeds, then the mean
    and bootstrap interval of the per-seed differences (same seed, same traces), where both ran them."""
    text = pct(reduction(amc, other))
    paired = paired_reduction(rows, method)
    if paired is None:
        return text
    mean, lo, hi = paired
    return f"{text}; per seed {pct(mean)} [{lo:+.1f}, {hi:+.1f}]"


def _means(rows: pd.DataFrame) -> dict[str, float]:
    return rows.groupby("method")["makespan"].mean().to_dict()


def results_table(
    summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment, missing_cells: int = 0
) -> str:
    """``table.md``: the default point in every setting, its spread and the headline claims (when the
    experiment has a default point), then one table per sweep. ``missing_cells``: cells of ``exp`` without
    results, said under the title so that a committed partial table reads as one."""
    partial = (
        [
            f"**Partial:** {missing_cells} of {members['cell_id'].nunique()} cells have no results yet; means and "
            f"intervals are over the finished ones (`mecsim sweep {exp.name}` computes the rest).",
            "",
        ]
        if missing_cells
        else []
    )
    tagged = default_point(summary, members, exp)
    if tagged.empty:
        lines = [
            f"# {exp.name}: results",
            "",
            *partial,
            f"{exp.description}. Seeds {sorted(exp.seeds)}; engine `{exp.engine}`.",
            "",
            METRIC_NOTE,
            "",
        ]
        return "\n".join(lines + sweep_tables(summary, members, exp))
    pub = published_default()
    methods = [m for m in exp.methods if m in set(tagged["method"])]
    seeds = sorted(tagged["seed"].unique().tolist())
    lines = [
        f"# {exp.name}: results at the default point",
        "",
        *partial,
        f"{exp.description}. Seeds {seeds}; engine `{exp.engine}`. Scenario: "
        + ", ".join(f"{k} = {v}" for k, v in exp.scenario.items())
        + ".",
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
        header += " AMCoEdge vs this, paired by seed (− = AMCoEdge lower) |"
        rule += "---|"
        lines.extend([header, rule])
        means = _means(rows)
        amc = means.get("amcoedge", math.nan)
        for method in methods:
            r = rows[rows["method"] == method]
            if r.empty:
                continue
            cells = [
                method,
                ", ".join(sorted(r["preset"].unique())),
                str(int(r["episodes_planned"].iloc[0])),
                _fmt(r["makespan"]),
                _fmt(r["failure_rate"]),
                _fmt(r["eval_makespan"]) if r["eval_makespan"].notna().any() else "–",
            ]
            if with_published:
                if method in pub.index:
                    p = float(pub.loc[method, "makespan"])
                    cells += [f"{p:.4f}", pct(100.0 * (means[method] - p) / p)]
                else:
                    cells += ["–", "–"]
            cells.append("–" if method == "amcoedge" else _paired(rows, method, amc, means[method]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        return means

    own_rows = tagged[tagged["setting"] == "slotted, own preset"]
    common_rows = tagged[tagged["setting"] == f"slotted, common preset ({exp.common_preset})"]
    event_rows = tagged[tagged["setting"] == f"event, common preset ({exp.common_preset})"]
    comparable = comparable_to_published(exp)
    if not comparable:
        lines.extend(
            [
                "**Note:** this experiment's default point is not the published one (f = [10, 20, 30, 40, 50], "
                "N = 50, p = 0.3, deadline 1.0 s, 61 slots), so its numbers are not comparable with the published ones; "
                "the published columns and the headline check are shown for the layout only.",
                "",
            ]
        )
    own = section(
        "Reproduction: each method on its own published preset (slotted model)", own_rows, comparable
    )
    common = section(
        f"Fair comparison: every method on the common preset `{exp.common_preset}` (slotted model)",
        common_rows,
        False,
    )
    event = section(
        f"Event model (FIFO queues and links), common preset `{exp.common_preset}`", event_rows, False
    )
    spread_section(lines, tagged, methods, pub if comparable else None)
    if comparable:
        start_section(lines, tagged, methods, pub)

    pub_means = pub["makespan"].to_dict()
    columns = [
        ("published CSVs", pub_means, None),
        ("ours, own presets", own, own_rows),
        ("ours, common preset", common, common_rows),
        ("ours, event model", event, event_rows),
    ]
    headline_section(lines, columns)
    return "\n".join(lines + sweep_tables(summary, members, exp))


def sweep_tables(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment) -> list[str]:
    """One table per sweep and delay model: each method's mean make-span (failure rate) at every value."""
    lines = []
    for name in dict.fromkeys(b.name for b in exp.blocks if b.parameter is not None):
        ids = members[members["sweep"] == name][["cell_id", "swept_value"]]
        data = summary.drop(columns=["sweep", "swept_value"], errors="ignore").merge(ids, on="cell_id")
        for (model, preset), part in data.groupby(["model", "preset"], sort=True):
            xs = sorted(part["swept_value"].unique())
            lines += [
                f"## Sweep `{name}` ({exp.parameter_of(name)}), {model} model, preset `{preset}`",
                "",
                "Mean make-span (s) over seeds, failure rate in brackets.",
                "",
                "| method | " + " | ".join(f"{x:g}" for x in xs) + " |",
                "|---|" + "---|" * len(xs),
            ]
            for method in [m for m in exp.methods if m in set(part["method"])]:
                rows = (
                    part[part["method"] == method].groupby("swept_value")[["makespan", "failure_rate"]].mean()
                )
                cells = [
                    f"{rows.loc[x, 'makespan']:.4f} ({100 * rows.loc[x, 'failure_rate']:.1f} %)"
                    if x in rows.index
                    else "–"
                    for x in xs
                ]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
            lines += paired_sweep_table(part, [m for m in exp.methods if m in set(part["method"])], xs)
    return lines


FEW_SEEDS = 5  # below this many seeds, a sweep's paired intervals are flagged as coarse


def paired_sweep_table(part: pd.DataFrame, methods: list[str], xs: list) -> list[str]:
    """AMCoEdge against every other method of one sweep, seed by seed at each value (same seed, same
    traces); nothing when AMCoEdge is not in the sweep or no value has two seeds both ran."""
    if "amcoedge" not in methods:
        return []
    rows, any_paired = [], False
    for method in [m for m in methods if m != "amcoedge"]:
        cells = []
        for x in xs:
            paired = paired_reduction(part[part["swept_value"] == x], method)
            any_paired |= paired is not None
            cells.append("–" if paired is None else f"{paired[0]:+.1f} [{paired[1]:+.1f}, {paired[2]:+.1f}]")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    if not any_paired:
        return []
    seeds = part.groupby("swept_value")["seed"].nunique()
    count = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    # a percentile bootstrap over n seeds has at most C(2n-1, n) distinct resamples (10 for 3 seeds)
    coarse = " With this few seeds the interval is coarse." if seeds.min() < FEW_SEEDS else ""
    return [
        f"AMCoEdge's make-span against each method's, paired by seed ({count} seeds per value): the mean of "
        "the per-seed differences in % (− = AMCoEdge lower) and its 95 % percentile bootstrap interval."
        + coarse,
        "",
        "| AMCoEdge vs | " + " | ".join(f"{x:g}" for x in xs) + " |",
        "|---|" + "---|" * len(xs),
        *rows,
        "",
    ]


def spread_section(
    lines: list[str], tagged: pd.DataFrame, methods: list[str], published: pd.DataFrame | None
) -> None:
    """The "Spread over seeds" table: per setting and method, the distribution of the per-seed values."""
    lines.extend(
        [
            "## Spread over seeds",
            "",
            "Per-seed make-spans (s). Each seed draws its own traces and density vector, as one run of the reference "
            'code does; a published number is one such run. "≤ published": the seeds whose value is at or below the '
            f"published one (own presets only). Gain: the make-span over the mean of the first {FIRST_EPISODES} online "
            "episodes (a learner's exploring start), mean over seeds; a seed's density vector moves both alike.",
            "",
            "| setting | method | seeds | mean | SD | min | median | max | published | ≤ published | gain | published gain |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    )
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
    return (
        f"| {setting} | {method} | {int(r['seeds'])} | {r['mean']:.4f} | {sd} | {r['min']:.4f} | "
        f"{r['median']:.4f} | {r['max']:.4f} | {pub} | {below} | {r['gain']:.3f} | {pub_gain} |"
    )


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
            ours = tagged.loc[
                (tagged["setting"] == "slotted, own preset") & (tagged["method"] == method), "makespan"
            ]
            theirs = rows.loc[rows["method"] == method, "makespan"]
            if ours.size >= 2:
                p = stats.mannwhitneyu(ours, theirs, alternative="two-sided").pvalue
                tests.append(
                    f"{method}: ours {ours.mean():.4f} over {ours.size} seeds, the reference code "
                    f"{theirs.mean():.4f} over {theirs.size} runs, Mann-Whitney p = {p:.2f}"
                )
    if tests:
        lines.extend(["", "Own preset, ours against the reference code's reruns: " + "; ".join(tests) + "."])


def start_section(
    lines: list[str], tagged: pd.DataFrame, methods: list[str], published: pd.DataFrame
) -> None:
    """The "Published runs, given their start" table: per learner and source of runs (ours, the
    reference code's reruns), the end predicted at the published run's start, and the published end."""
    rows = []
    for method, by_source in start_fit_runs(tagged, methods, published).items():
        start, end = float(published.loc[method, "first_makespan"]), float(published.loc[method, "makespan"])
        for source, runs in by_source.items():
            if len(runs) < START_FIT_MIN_RUNS:
                continue
            fit = predict_from_start(runs["first_makespan"], runs["makespan"], start)
            rows.append(
                f"| {method} | {source} | {fit.runs} | {runs['first_makespan'].min():.4f}–"
                f"{runs['first_makespan'].max():.4f} | {fit.slope:.2f} | {fit.r:.2f} | {start:.4f} | "
                f"{fit.predicted:.4f} ({fit.low:.4f}–{fit.high:.4f}) | {end:.4f} | {fit.p_value(end):.2f} |"
            )
    if not rows:
        return
    lines.extend(
        [
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
        ]
    )
