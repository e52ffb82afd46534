"""The published runs given their start: the start-end line, its prediction interval, and the table and figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mecsim.report.figures import start_end_figure
from mecsim.report.stats import predict_from_start
from mecsim.report.table import start_section
from mecsim.sweep import load_experiment

T_975_2DOF = 4.302652729911275
T_975_4DOF = 2.7764451051977987


def test_prediction_by_hand():
    # x mean 1.5, Sxx 5, Sxy 6.5: slope 1.3, intercept -0.2; residuals 0.2, -0.1, -0.4, 0.3: SSE 0.30, s² 0.15
    fit = predict_from_start(np.array([0.0, 1, 2, 3]), np.array([0.0, 1, 2, 4]), 4.0)
    se = math.sqrt(0.15 * (1 + 1 / 4 + 2.5**2 / 5))
    assert (fit.runs, fit.slope, fit.intercept, fit.predicted) == (
        4,
        pytest.approx(1.3),
        pytest.approx(-0.2),
        pytest.approx(5.0),
    )
    assert fit.se == pytest.approx(se)
    assert (fit.low, fit.high) == (pytest.approx(5.0 - T_975_2DOF * se), pytest.approx(5.0 + T_975_2DOF * se))
    assert fit.r == pytest.approx(6.5 / math.sqrt(5 * 8.75))
    assert fit.p_value(5.0) == pytest.approx(1.0)
    assert fit.p_value(5.0 + T_975_2DOF * se) == pytest.approx(0.05)  # the interval's edge
    assert fit.p_value(5.0 - 2 * T_975_2DOF * se) < 0.05


@pytest.mark.parametrize("starts, ends", [([0.2, 0.3], [0.2, 0.3]), ([0.2] * 4, [0.1, 0.2, 0.3, 0.4])])
def test_prediction_needs_three_distinct_starts(starts, ends):
    with pytest.raises(ValueError, match="at least 3 runs with distinct starts"):
        predict_from_start(np.array(starts), np.array(ends), 0.25)


def test_prediction_refuses_unequal_lengths():
    with pytest.raises(ValueError, match="equal length"):
        predict_from_start(np.array([0.1, 0.2, 0.3]), np.array([0.1, 0.2]), 0.25)


# Six runs on the line end = 2·start, off it by residuals orthogonal to 1 and to start: the fit is exactly
# slope 2, intercept 0; SSE 4 over 4 dof gives s = 1; Sxx 17.5, Syy 74, so r = 35 / sqrt(17.5 · 74).
STARTS = [0.0, 1, 2, 3, 4, 5]
ENDS = [2 * x + r for x, r in zip(STARTS, [1, -1, -1, 1, 0, 0])]


def learner_rows(method: str, starts: list[float], ends: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "setting": "slotted, own preset",
            "method": method,
            "method_kind": "learner",
            "seed": range(len(starts)),
            "first_makespan": starts,
            "makespan": ends,
        }
    )


# The same six as AMCoEdge reruns of the reference code: 10 exploring episodes at the start, 50 at the end.
RERUNS = {run: [start] * 10 + [end] * 50 for run, (start, end) in enumerate(zip(STARTS, ENDS))}


def test_start_section_by_hand(use_reruns):
    use_reruns(RERUNS)
    published = pd.DataFrame(
        {"makespan": [5.0, 1.0], "first_makespan": [2.5, 2.5]}, index=["amcoedge", "drlcoedge"]
    )
    tagged = pd.concat(
        [learner_rows("amcoedge", STARTS, ENDS), learner_rows("drlcoedge", STARTS[:5], ENDS[:5])]
    )  # 5 seeds: too few for a line
    lines: list[str] = []
    start_section(lines, tagged, ["amcoedge", "drlcoedge"], published)
    text = "\n".join(lines)
    half = T_975_4DOF * math.sqrt(1 + 1 / 6)  # at the mean start, s = 1
    r = 35 / math.sqrt(17.5 * 74)
    for source in ("ours", "reference code"):
        assert (
            f"| amcoedge | {source} | 6 | 0.0000–5.0000 | 2.00 | {r:.2f} | 2.5000 | "
            f"5.0000 ({5 - half:.4f}–{5 + half:.4f}) | 5.0000 | 1.00 |"
        ) in text
    assert "drlcoedge" not in text

    lines = []
    start_section(lines, tagged[tagged["method"] == "drlcoedge"], ["drlcoedge"], published)
    assert lines == []  # nothing to fit, no section


def test_start_end_figure_is_drawn(use_reruns, tmp_path: Path):
    use_reruns(RERUNS)
    path = tmp_path / "six.toml"
    path.write_text("""
name = "six"
[run]
seeds = [0, 1, 2, 3, 4, 5]
common_preset = "optimal"  # so that the amcoedge cells count as its own preset
[methods.amcoedge]
episodes = 500
learner = true
preset = "amcoedge"
[[sweep]]
name = "default"
presets = ["own"]
""")
    exp = load_experiment(path)
    cells = exp.cells()
    summary = pd.DataFrame(
        {
            "cell_id": [c.cell_id for c in cells],
            "method": "amcoedge",
            "method_kind": "learner",
            "preset": "amcoedge",
            "model": "slotted",
            "seed": [c.scenario.seed for c in cells],
            "makespan": [0.22 + 0.01 * c.scenario.seed for c in cells],
            "first_makespan": [0.24 + 0.005 * c.scenario.seed for c in cells],
        }
    )
    written = start_end_figure(summary, exp.memberships(cells), exp, tmp_path)
    assert sorted(p.name for p in written) == ["start-end.png", "start-end.svg"]
    assert all(p.stat().st_size > 0 for p in written)
    assert start_end_figure(summary.iloc[:5], exp.memberships(cells), exp, tmp_path) == []  # too few seeds
