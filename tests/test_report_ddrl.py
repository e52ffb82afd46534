"""The diffusion-policy claims' report: convergence episodes, bootstrap intervals, paired reductions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mecsim.report import ddrl
from mecsim.sweep import load_experiment


def test_convergence_episode_hand_computed():
    # 200 episodes: 10 s for 50 episodes, then 5 s. The final level is 5; the trailing 20-episode mean
    # is within 5 % of it (<= 5.25) once at most 1 of its 20 episodes is a 10: from episode 68 on.
    curve = pd.Series([10.0] * 50 + [5.0] * 150, index=range(200))
    assert ddrl.convergence_episode(curve) == 68


def test_convergence_episode_never_and_immediately():
    rising = pd.Series(np.linspace(1, 100, 300), index=range(300))
    assert ddrl.convergence_episode(rising) is None  # the last window is still far from the final level
    flat = pd.Series([3.0] * 100, index=range(100))
    assert ddrl.convergence_episode(flat) == 19  # the first full window


def test_convergence_episode_late_excursion_counts():
    values = [5.0] * 300
    values[150] = 50.0  # one spike lifts the 20-episode mean by 2.25 (> 5 % of 5) for episodes 150-169
    assert ddrl.convergence_episode(pd.Series(values, index=range(300))) == 170


def test_bootstrap_interval_is_deterministic_and_brackets_the_mean():
    x = np.array([1.0, 2.0, 4.0, 3.0, 2.5, 3.5, 1.5, 2.0])
    lo, hi = ddrl.bootstrap_interval(x)
    assert (lo, hi) == ddrl.bootstrap_interval(x)
    assert lo < x.mean() < hi
    assert x.min() <= lo and hi <= x.max()


def test_bootstrap_interval_degenerate_inputs():
    assert ddrl.bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert ddrl.bootstrap_interval([1.0, 3.0]) == (2.0, 2.0)
    lo, hi = ddrl.bootstrap_interval([])
    assert math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize(
    ("lo", "hi", "claim", "word"),
    [
        (20.0, 30.0, 18.22, "reproduced"),
        (18.22, 30.0, 18.22, "reproduced"),
        (-5.0, 10.0, 13.54, "not reproduced"),
        (10.0, 15.0, 13.54, "not decided (the interval contains the claim)"),
        (1.0, 2.0, None, ""),
    ],
)
def test_claim_verdict(lo, hi, claim, word):
    assert ddrl.claim_verdict(lo, hi, claim) == word


def _summary(rows):
    return pd.DataFrame(rows, columns=["cell_id", "method", "preset", "seed", "makespan", "model"])


def test_amsa_paired_pairs_by_seed_at_the_default_point():
    exp = load_experiment("amsa")
    rows = []
    for seed in range(4):
        rows.append((f"a{seed}", "ddrl-amsa", "amcoedge", seed, 0.2 + 0.01 * seed, "slotted"))
        rows.append((f"d{seed}", "drlcoedge", "amcoedge", seed, 0.25 + 0.01 * seed, "slotted"))
    rows.append(("d9", "drlcoedge", "amcoedge", 9, 100.0, "slotted"))  # no DDRL-AMSA run on seed 9: left out
    rows.append(("s0", "drlcoedge", "amcoedge", 0, 50.0, "slotted"))  # a sweep cell, not the default point
    members = pd.DataFrame({"cell_id": [r[0] for r in rows], "sweep": "default"})
    members.loc[members["cell_id"] == "s0", "sweep"] = "deadline"
    paired = ddrl.amsa_paired(_summary(rows), members, exp)
    row = paired[(paired["baseline"] == "drlcoedge") & paired["setting"].str.contains("common")].iloc[0]
    expected = [100 * (1 - (0.2 + 0.01 * s) / (0.25 + 0.01 * s)) for s in range(4)]
    assert row["seeds"] == 4
    assert row["reduction"] == pytest.approx(np.mean(expected))
    assert row["wins"] == 4
    assert row["lo"] <= row["reduction"] <= row["hi"]
    assert row["verdict"] == ddrl.claim_verdict(row["lo"], row["hi"], 18.22)

    members["sweep"] = "default"  # two default-point cells of one seed cannot be paired
    with pytest.raises(ValueError, match="several default-point cells per seed"):
        ddrl.amsa_paired(_summary(rows), members, exp)


def test_dedgeai_runs_plateau_and_start():
    episodes = np.arange(500)
    curve = np.where(episodes < 100, 20.0, 8.0)
    df = pd.DataFrame(
        {
            "method": "ddrl-ats",
            "seed": 0,
            "episode": episodes,
            "mean_makespan": curve,
            "phase": "online",
            "method_kind": "learner",
        }
    )
    run = ddrl.dedgeai_runs(df).iloc[0]
    assert run["start"] == 20.0
    assert run["plateau"] == 8.0
    assert run["final"] == 8.0
    assert run["convergence"] == 119  # within 5 % of 8 only once none of the window's 20 episodes is a 20
