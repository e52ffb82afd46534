"""`mecsim.training.train` on the compiled kernel and the Python path: same outputs, clear refusals."""

from __future__ import annotations

import pytest

from mecsim.config import Scenario
from mecsim.plugins import make_scheduler
from mecsim.scheduling import SchedulerError
from mecsim.training import train

TINY = Scenario(
    n_bs=3, capacities=(10, 20, 30), rates=(400, 450, 500), tasks_per_slot=4, slots=6, arrival_prob=0.5
)
FAST = {"learn_start": 2, "learn_every": 1, "batch_size": 4}


@pytest.mark.parametrize("engine", ["compiled", "python"])
def test_train_writes_online_and_eval_rows_and_a_loadable_checkpoint(tmp_path, engine):
    result = train(
        TINY, "amcoedge", 4, out_dir=tmp_path, eval_episodes=2, options=FAST, engine=engine, timing=False
    )
    phases = result.episodes["phase"].tolist()
    assert phases == ["online"] * 4 + ["eval"] * 2
    assert result.episodes["n_tasks"].gt(0).all()
    assert result.scheduler.learn_step > 0  # learning happened (and was written back from the kernel)
    fresh = make_scheduler("amcoedge", TINY, **FAST)
    fresh.load(str(result.checkpoint))
    assert fresh.learn_step == result.scheduler.learn_step


def test_compiled_training_is_deterministic(tmp_path):
    a = train(TINY, "amcoedge", 3, eval_episodes=0, options=FAST, engine="compiled", timing=False).episodes
    b = train(TINY, "amcoedge", 3, eval_episodes=0, options=FAST, engine="compiled", timing=False).episodes
    assert a.equals(b)


def test_auto_falls_back_to_python_where_the_kernel_cannot_train():
    rich = {**FAST, "observation": "rich"}  # the rich observation is Python-only
    result = train(TINY, "amcoedge", 2, eval_episodes=0, options=rich, engine="auto")
    assert len(result.episodes) == 2 and (result.episodes.engine_used == "python").all()
    with pytest.raises(SchedulerError, match="cannot train on the kernel"):
        train(TINY, "amcoedge", 2, eval_episodes=0, options=rich, engine="compiled")
    with pytest.raises(SchedulerError, match="engine 'gpu'.*auto, python, compiled"):
        train(TINY, "amcoedge", 2, engine="gpu")


def _assert_tables_close(got, want):
    import numpy as np
    import pandas as pd

    assert got.columns.tolist() == want.columns.tolist()
    numeric = [c for c in want.columns if want[c].dtype.kind == "f"]
    np.testing.assert_allclose(got[numeric].to_numpy(), want[numeric].to_numpy(), rtol=0, atol=1e-12)
    other = [c for c in want.columns if c not in numeric]
    pd.testing.assert_frame_equal(got[other], want[other])


def test_replicas_of_different_size_train_together_as_they_train_alone():
    """train_many / run_many: seeds, deadlines, arrival probabilities and N (padded to the largest) in one
    compiled call; each replica's table equals its own run's."""
    from mecsim.runner import run, run_many
    from mecsim.training import train_many

    scenarios = [
        TINY,
        TINY.replace(seed=1, tasks_per_slot=2, deadline=0.05),
        TINY.replace(seed=2, tasks_per_slot=3, arrival_prob=0.9),
    ]
    together = train_many(
        scenarios, "amcoedge", 4, eval_episodes=2, options=FAST, engine="compiled", timing=False
    )
    for sc, result in zip(scenarios, together):
        alone = train(sc, "amcoedge", 4, eval_episodes=2, options=FAST, engine="compiled", timing=False)
        _assert_tables_close(result.episodes, alone.episodes)
        assert result.scheduler.learn_step == alone.scheduler.learn_step > 0
    for name in ("optimal", "random"):
        for sc, table in zip(scenarios, run_many(scenarios, name, 3, engine="compiled", timing=False)):
            _assert_tables_close(table, run(sc, name, 3, engine="compiled", progress=False, timing=False)[0])
    with pytest.raises(SchedulerError, match="must share B"):
        train_many([TINY, Scenario(seed=1)], "amcoedge", 1, eval_episodes=0, engine="compiled")


def test_the_last_smaller_call_runs_on_the_kernel_compiled_for_the_others():
    """run_scenarios fills a last, smaller group up with copies: one compiled kernel for 4 + 4 + 1 replicas,
    and every replica's metrics as its own run gives them (the copies' outputs dropped)."""
    import numpy as np
    import pandas as pd
    from jax import monitoring

    from mecsim.backends.kernel import scan
    from mecsim.backends.kernel.simulation import run_scenarios
    from mecsim.runner import run

    scenarios = [TINY.replace(seed=s) for s in range(3)]
    policy = make_scheduler("optimal", TINY).jax_policy()
    scan.compiled_episodes.cache_clear()
    compiled = []

    def count(event, seconds, fun_name="", **kwargs):
        if event == "/jax/core/compile/backend_compile_duration" and "episode_flat" in fun_name:
            compiled.append(fun_name)

    monitoring.register_event_duration_secs_listener(count)
    try:
        results = run_scenarios(scenarios, 3, policy, group=4)
    finally:
        monitoring.unregister_event_duration_listener(count)
    assert len(compiled) == 1
    assert sorted(results) == [(i, e) for i in range(3) for e in range(3)]
    for i, sc in enumerate(scenarios):
        alone = run(sc, "optimal", 3, engine="compiled", progress=False, timing=False)[0]
        got = pd.DataFrame([results[i, e][0] for e in range(3)])
        np.testing.assert_allclose(got["mean_makespan"], alone["mean_makespan"], rtol=0, atol=1e-12)
        assert got["n_tasks"].tolist() == alone["n_tasks"].tolist()
