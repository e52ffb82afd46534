"""`mecsim.training.train` on the compiled kernel and the Python path: same outputs, clear refusals."""
from __future__ import annotations

import pytest

from mecsim.config import Scenario
from mecsim.scheduling import SchedulerError, make_scheduler
from mecsim.training import train

TINY = Scenario(n_bs=3, capacities=(10, 20, 30), rates=(400, 450, 500), tasks_per_slot=4, slots=6, arrival_prob=0.5)
FAST = {"learn_start": 2, "learn_every": 1, "batch_size": 4}


@pytest.mark.parametrize("engine", ["compiled", "python"])
def test_train_writes_online_and_eval_rows_and_a_loadable_checkpoint(tmp_path, engine):
    result = train(TINY, "amcoedge", 4, out_dir=tmp_path, eval_episodes=2, options=FAST, engine=engine, timing=False)
    phases = result.episodes["phase"].tolist()
    assert phases == ["online"] * 4 + ["eval"] * 2
    assert result.episodes["n_tasks"].gt(0).all()
    assert result.scheduler.agents.learn_step > 0  # learning happened (and was written back from the kernel)
    fresh = make_scheduler("amcoedge", TINY, **FAST)
    fresh.load(str(result.checkpoint))
    assert fresh.agents.learn_step == result.scheduler.agents.learn_step


def test_compiled_training_is_deterministic(tmp_path):
    a = train(TINY, "amcoedge", 3, eval_episodes=0, options=FAST, engine="compiled", timing=False).episodes
    b = train(TINY, "amcoedge", 3, eval_episodes=0, options=FAST, engine="compiled", timing=False).episodes
    assert a.equals(b)


def test_auto_falls_back_to_python_where_the_kernel_cannot_train():
    event = TINY.replace(model="event")
    result = train(event, "amcoedge", 2, eval_episodes=0, options=FAST, engine="auto")
    assert len(result.episodes) == 2
    with pytest.raises(SchedulerError, match="slotted model only"):
        train(event, "amcoedge", 2, eval_episodes=0, options=FAST, engine="compiled")
    with pytest.raises(SchedulerError, match="engine 'gpu'.*auto, python, compiled"):
        train(TINY, "amcoedge", 2, engine="gpu")
