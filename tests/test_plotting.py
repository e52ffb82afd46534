"""`mecsim plot`: confidence intervals, the headline verdict, and the figures and table of a finished sweep."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mecsim.report import plot_experiment
from mecsim.report.claims import headline_section, paired_reduction, verdict
from mecsim.report.data import reference_reruns, rerun_default
from mecsim.report.stats import band, percentile_interval, seed_spread
from mecsim.report.table import spread_section
from mecsim.results import write_parquet
from mecsim.sweep import compute_cell, label, load_experiment, part_path

SMALL = """
name = "small"
[run]
seeds = [0, 1]
[scenario]
tasks_per_slot = 3
slots = 3
[methods.local]
episodes = 2
[methods.random]
episodes = 2
preset = "randcoedge"
[methods.optimal]
episodes = 2
preset = "optimal"
[[sweep]]
name = "default"
presets = ["common", "own"]
[[sweep]]
name = "convergence"
presets = ["own", "common"]
[[sweep]]
name = "deadline"
parameter = "deadline"
values = [0.05, 1.0]
"""


def test_percentile_interval_by_hand():
    # two values: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5 % and 97.5 %
    # points are the two values themselves
    assert percentile_interval([0.0, 1.0]) == (0.0, 1.0)
    low, high = percentile_interval([1.0, 2.0, 3.0])
    assert 1.0 <= low < 2.0 < high <= 3.0
    assert percentile_interval([1.0, 2.0, 3.0]) == (low, high)  # deterministic
    assert percentile_interval([0.5]) == (0.5, 0.5) and percentile_interval([0.2, 0.2]) == (0.2, 0.2)
    assert all(math.isnan(v) for v in percentile_interval([]))


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_a_rates_interval_stays_within_its_values_and_zero_to_one(rates):
    low, high = percentile_interval(rates)
    assert min(rates) - 1e-12 <= low <= high <= max(rates) + 1e-12
    assert 0.0 <= low and high <= 1.0


def test_band_is_percentile_interval_per_group():
    rows = pd.DataFrame({
        "method": ["a"] * 3 + ["b"] * 6,
        "episode": [0, 0, 0, 0, 0, 0, 0, 0, 0],
        "v": [0.1, 0.4, 0.2, 1.0, 0.0, 1.0, 1.0, np.nan, 0.0],
    })  # fmt: skip
    out = band(rows, ["method", "episode"], "v").set_index("method")
    for method, g in rows.groupby("method"):
        assert (out.loc[method, "lo"], out.loc[method, "hi"]) == percentile_interval(g["v"])
        assert out.loc[method, "count"] == g["v"].notna().sum()
    assert out.loc["b", "lo"] >= 0.0 and out.loc["b", "hi"] <= 1.0


def test_seed_spread_by_hand():
    rows = pd.DataFrame(
        {
            "method": ["amcoedge"] * 4 + ["optimal"] * 2,
            "makespan": [0.20, 0.22, 0.24, 0.30, 0.21, 0.19],
            "first_makespan": [0.25, 0.22, 0.30, 0.25, 0.21, 0.19],
        }
    )
    published = pd.DataFrame({"makespan": [0.22], "first_makespan": [0.25]}, index=["amcoedge"])
    spread = seed_spread(rows, published).set_index("method")
    amc = spread.loc["amcoedge"]
    assert amc["seeds"] == 4 and amc["mean"] == pytest.approx(0.24) and amc["median"] == pytest.approx(0.23)
    assert amc["min"] == pytest.approx(0.20) and amc["max"] == pytest.approx(0.30)
    assert amc["sd"] == pytest.approx(math.sqrt((0.04**2 + 0.02**2 + 0 + 0.06**2) / 3))
    assert amc["at_or_below_published"] == 2  # 0.20 and 0.22 (ties count)
    assert amc["gain"] == pytest.approx((0.8 + 1.0 + 0.8 + 1.2) / 4)
    assert amc["published_gain"] == pytest.approx(0.88)
    assert math.isnan(spread.loc["optimal", "published"])  # no published value for it
    assert spread.loc["optimal", "gain"] == pytest.approx(1.0)


def test_reference_reruns_are_whole_runs():
    runs = reference_reruns()
    episodes = {"amcoedge": 500, "drlcoedge": 400}  # the published episode counts
    assert (runs["environment"] == "own preset").any()
    for (method, _, _), r in runs.groupby(["method", "environment", "run"]):
        assert r["episode"].tolist() == list(range(episodes[method]))
        assert r["mean_makespan"].between(0, 1, inclusive="right").all()  # capped at the 1 s deadline
        assert r["failure_rate"].between(0, 1).all()


def test_rerun_metric_and_rows_by_hand(use_reruns):
    # run 0: 10 exploring episodes at 0.30, then 50 at 0.24; run 1: 60 episodes at 0.20 (ties the published value)
    use_reruns({0: [0.30] * 10 + [0.24] * 50, 1: [0.20] * 60})
    runs = rerun_default().set_index("run")
    assert runs.loc[0, "makespan"] == pytest.approx(0.24) and runs.loc[0, "first_makespan"] == pytest.approx(
        0.30
    )
    assert runs.loc[1, "makespan"] == pytest.approx(0.20)

    tagged = pd.DataFrame(
        {
            "setting": "slotted, own preset",
            "method": "amcoedge",
            "seed": [0, 1, 2],
            "makespan": [0.25, 0.26, 0.27],
            "first_makespan": [0.30, 0.30, 0.30],
        }
    )
    published = pd.DataFrame({"makespan": [0.20], "first_makespan": [0.25]}, index=["amcoedge"])
    lines: list[str] = []
    spread_section(lines, tagged, ["amcoedge"], published)
    text = "\n".join(lines)
    # mean 0.22, SD of (0.24, 0.20), one of two runs at or below 0.20, gain (0.8 + 1.0) / 2
    assert (
        "| reference code rerun, own preset | amcoedge | 2 | 0.2200 | 0.0283 | 0.2000 | 0.2200 | 0.2400 | "
        "0.2000 | 1 / 2 | 0.900 | 0.800 |"
    ) in text
    # every one of our three seeds is above both runs: the smallest two-sided Mann-Whitney p for 3 against 2
    assert "ours 0.2600 over 3 seeds, the reference code 0.2200 over 2 runs, Mann-Whitney p = 0.20" in text

    lines = []
    spread_section(lines, tagged, ["amcoedge"], None)  # not the published point: no reruns either
    assert not any("reference code rerun" in line or "Mann-Whitney" in line for line in lines)


@pytest.mark.parametrize(
    "means, word",
    [
        # -28 %, -17 %, -12 % against the baselines, +2 % against optimal: the claim itself
        (
            {
                "amcoedge": 0.72,
                "random": 1.0,
                "drlcoedge": 0.72 / 0.83,
                "smcoedge": 0.72 / 0.88,
                "optimal": 0.72 / 1.02,
            },
            "**holds**",
        ),
        # beats everyone and is near optimal, but by 5 % instead of 28 % against random
        (
            {
                "amcoedge": 0.95,
                "random": 1.0,
                "drlcoedge": 0.95 / 0.83,
                "smcoedge": 0.95 / 0.88,
                "optimal": 0.95 / 1.02,
            },
            "**holds qualitatively**",
        ),
        # loses to SMCoEdge
        (
            {"amcoedge": 0.72, "random": 1.0, "drlcoedge": 0.9, "smcoedge": 0.7, "optimal": 0.7},
            "**does not hold**",
        ),
        # no SMCoEdge cells
        ({"amcoedge": 0.72, "random": 1.0, "drlcoedge": 0.9, "optimal": 0.7}, "**not assessed**"),
    ],
)
def test_headline_verdict(means, word):
    assert verdict(means).startswith(word)
    assert verdict({"random": 1.0}).startswith("not assessed")


def test_paired_reduction_pairs_seeds_not_means():
    # AMCoEdge is 10 % below drlcoedge on seed 0 and 20 % below on seed 1; seed 2 has no drlcoedge run
    rows = pd.DataFrame(
        {
            "seed": [0, 0, 1, 1, 2],
            "method": ["amcoedge", "drlcoedge", "amcoedge", "drlcoedge", "amcoedge"],
            "makespan": [0.9, 1.0, 1.6, 2.0, 5.0],
        }
    )
    mean, lo, hi = paired_reduction(rows, "drlcoedge")
    assert mean == pytest.approx(-15.0)
    assert (lo, hi) == pytest.approx((-20.0, -10.0))  # two values: their bootstrap means span them
    assert paired_reduction(rows[rows["seed"] == 0], "drlcoedge") is None  # one seed: no interval
    assert paired_reduction(rows, "smcoedge") is None

    lines: list[str] = []
    means = {"amcoedge": 1.0, "random": 1.0, "drlcoedge": 1.0, "smcoedge": 1.0, "optimal": 1.0}
    headline_section(lines, [("published CSVs", means, None), ("ours", means, rows)])
    text = "\n".join(lines)
    assert "| drlcoedge | -17 % | +0.0 % | +0.0 % [-20.0, -10.0] |" in text
    assert "drlcoedge inside [-20.0, -10.0]" in text  # the claimed -17 % lies within


def test_plot_writes_every_figure_and_the_table_byte_stably(tmp_path: Path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    exp = load_experiment(path)
    out = tmp_path / "results" / exp.name
    for cell in exp.cells():
        write_parquet(label(compute_cell(cell.payload()), cell), part_path(out, cell.cell_id))

    written = plot_experiment(exp, results_dir=tmp_path / "results", echo=lambda *_: None)
    names = {p.name for p in written}
    for stem in ("sweep-deadline-slotted", "default-point", "default-seeds", "convergence-slotted"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert all(p.stat().st_size > 0 for p in written)
    table = (out / "table.md").read_text()
    assert "## Reproduction: each method on its own published preset" in table
    assert "| random | randcoedge | 2 |" in table
    assert "## Does the headline hold?" in table
    assert "## Spread over seeds" in table
    assert "| slotted, own preset | random | 2 |" in table

    assert "**Partial:**" not in table
    first = {p: p.read_bytes() for p in written if p.suffix in (".svg", ".md")}
    plot_experiment(exp, results_dir=tmp_path / "results", echo=lambda *_: None)
    assert {p: p.read_bytes() for p in first} == first  # the same results give the same files

    cells = exp.cells()
    part_path(out, cells[0].cell_id).unlink()
    plot_experiment(exp, results_dir=tmp_path / "results", echo=lambda *_: None)
    assert f"**Partial:** 1 of {len(cells)} cells have no results yet" in (out / "table.md").read_text()


def test_paired_comparison_by_hand():
    from mecsim.report.table import _paired

    rows = pd.DataFrame({
        "method": ["amcoedge", "amcoedge", "random", "random"],
        "seed": [0, 1, 0, 1],
        "makespan": [1.0, 2.0, 2.0, 2.0],
    })  # fmt: skip
    # means 1.5 against 2.0: -25 %; per seed -50 % and 0 %: mean -25 %, and two values bound the interval
    assert _paired(rows, "random", 1.5, 2.0) == "-25.0 %; per seed -25.0 % [-50.0, +0.0]"
    assert _paired(rows[rows["seed"] == 0], "random", 1.0, 2.0) == "-50.0 %"  # one seed: no interval


def test_paired_sweep_table_by_hand():
    from mecsim.report.table import paired_sweep_table

    part = pd.DataFrame({
        "method": ["amcoedge", "amcoedge", "optimal", "optimal"] * 2 + ["amcoedge", "optimal"],
        "seed": [0, 1, 0, 1] * 2 + [0, 0],
        "swept_value": [0.1] * 4 + [0.2] * 4 + [0.3] * 2,
        "makespan": [1.0, 3.0, 2.0, 2.0, 1.1, 1.2, 1.0, 1.0, 1.0, 1.0],
    })  # fmt: skip
    lines = paired_sweep_table(part, ["optimal", "amcoedge"], [0.1, 0.2, 0.3])
    # 0.1: per seed -50 % and +50 %; 0.2: +10 % and +20 %; 0.3: one seed, no interval
    assert "| AMCoEdge vs | 0.1 | 0.2 | 0.3 |" in lines
    assert "| optimal | +0.0 [-50.0, +50.0] | +15.0 [+10.0, +20.0] | – |" in lines
    assert "(1–2 seeds per value)" in lines[0] and "coarse" in lines[0]
    assert paired_sweep_table(part, ["optimal"], [0.1]) == []  # no AMCoEdge: no table
    assert paired_sweep_table(part[part["swept_value"] == 0.3], ["optimal", "amcoedge"], [0.3]) == []
