"""The CartPole study: its training loop runs and learns nothing NaN; its summary statistics by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mecsim.studies import cartpole


def test_summary_by_hand():
    rows = []
    # method a: seeds reach 475 at 2 000 and 3 000 steps, a third never; b never
    curves = {
        ("a", 0): [100, 480, 500],
        ("a", 1): [50, 300, 475],
        ("a", 2): [10, 20, 30],
        ("b", 0): [9, 9, 9],
    }
    curves |= {("b", 1): [10, 10, 10], ("b", 2): [11, 11, 11]}
    for (method, seed), returns in curves.items():
        for i, r in enumerate(returns):
            rows.append(
                dict(method=method, seed=seed, steps=1000 * (i + 1), eval_return=float(r), wall_s=1.0)
            )
    table, tests = cartpole.summarise(pd.DataFrame(rows), resamples=200)
    a = table.set_index("method").loc["a"]
    # final returns 500, 475, 30: the trimmed mean (25 % each side of 3 values cuts none) is their mean
    assert a.final_iqm == pytest.approx((500 + 475 + 30) / 3)
    assert a.solved_fraction == pytest.approx(2 / 3)
    assert a.steps_to_475_median == 2500.0  # median of 2 000 and 3 000; the third never reaches it
    assert a.auc_mean == pytest.approx(np.mean([np.mean(v) for k, v in curves.items() if k[0] == "a"]))
    assert np.isnan(table.set_index("method").loc["b"].steps_to_475_median)
    assert tests.iloc[0].a == "a" and tests.iloc[0].b == "b"


@pytest.mark.parametrize("method", ["dqn", "dsac"])
def test_training_loop_runs_and_updates(method):
    overrides = {"learn_start": 30, "memory_size": 200, "batch_size": 8, "hidden": (8,)}
    runs = cartpole.run(
        method, [0, 1], steps=120, eval_every=60, eval_episodes=2, progress=False, overrides=overrides
    )
    assert list(runs.steps.unique()) == [60, 120]
    assert runs.eval_return.between(1, 500).all()  # every episode lasts at least one step


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="known methods"):
        cartpole.run("ppo", [0], steps=10, eval_every=10)
