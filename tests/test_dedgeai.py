"""The DEdgeAI scenario (reference spec §6.1): arrivals, workload, result downloads, no deadline."""

from __future__ import annotations

import numpy as np
import pytest

from mecsim.arrivals import episode_trace
from mecsim.config import ConfigError, Scenario, build_scenario
from mecsim.models import slotted
from mecsim.runner import run
from mecsim.scheduling import SchedulerError


def test_preset_is_the_reference_scenario():
    sc = Scenario(preset="dedgeai")
    # the reference's seeded draws: np.random.seed(2); randint(10, 51, 20) and seed(5); randint(400, 501, 20)
    np.random.seed(2)
    assert sc.capacities == tuple(float(f) for f in np.random.randint(10, 51, 20))
    np.random.seed(5)
    assert sc.rates == tuple(float(r) for r in np.random.randint(400, 501, 20))
    assert (sc.n_bs, sc.tasks_per_slot, sc.decision_slots, sc.deadline) == (20, 50, 59, None)
    assert (sc.arrivals, sc.workload, sc.result_range) == ("uniform_count", "steps", (0.6, 1.0))
    assert sc.variant.remote_wait_includes_tau is False
    assert sc.deadline_s == float("inf")


def test_explicit_fields_beat_the_preset_and_replace_resets_them():
    sc = Scenario(preset="dedgeai", slots=10)
    assert sc.slots == 10 and sc.n_bs == 20
    back = sc.replace(preset="amcoedge")
    assert back.n_bs == 5 and back.deadline == 1.0 and back.arrivals == "bernoulli" and back.slots == 10


def test_uniform_count_arrivals_fill_the_first_task_slots():
    sc = Scenario(preset="dedgeai", slots=400)
    tr = episode_trace(sc, 3, 0)
    present = tr.sizes > 0
    counts = present.sum(axis=-1)
    assert counts.min() == 1 and counts.max() == 50
    # task slots 0..count-1 hold the tasks
    assert np.array_equal(present, np.arange(50) < counts[..., None])
    # uniform on 1..50: mean 25.5, sd 14.43 over 8000 draws -> standard error 0.16
    assert abs(counts.mean() - 25.5) < 0.8


def test_steps_workload_is_per_step_work_times_steps_per_task_index():
    sc = Scenario(preset="dedgeai")
    tr = episode_trace(sc, 0, 0)
    work = tr.sizes * tr.densities
    present = tr.sizes > 0
    # fixed per task index n across slots and BSs, independent of the size
    per_index = np.where(present, work, np.nan)
    spread = np.nanmax(per_index, axis=(0, 1)) - np.nanmin(per_index, axis=(0, 1))
    assert np.nanmax(spread) < 1e-12
    w = np.nanmean(per_index, axis=(0, 1))
    assert 0.1024 - 1e-12 <= w.min() and w.max() <= 0.3072 * 14 + 1e-12
    # results follow the per-step work (the reference's seed reuse): res = 0.6 + 0.4 (rho - lo) / (hi - lo)
    res = tr.results[0, 0]
    assert res.min() >= 0.6 and res.max() <= 1.0
    assert np.array_equal(tr.results[5, 7], res)


def test_delay_terms_with_download_and_no_transmission_queue():
    sc = Scenario(preset="dedgeai", n_bs=2, capacities=(10.0, 20.0), rates=(400.0, 500.0))
    p = slotted.SlottedParams.from_scenario(sc)
    state = slotted.SlotState(np.array([5.0, 8.0]), np.array([1.0, 2.0]), np.array([0.7, 0.0]))
    size, work, result = 4.0, 2.0, 0.8
    wait, duration, _ = slotted.delay_terms(state, 0, size, work / size, p, result=result)
    # W = (Q + Q')/f, no tau even for the remote server
    assert wait == pytest.approx([6.0 / 10.0, 10.0 / 20.0])
    # local: w/f + res/r_a; remote: d/r_a + w/f + res/r_a
    assert duration == pytest.approx([2.0 / 10 + 0.8 / 400, 4.0 / 500 + 2.0 / 20 + 0.8 / 500])
    no_local = p._replace(variant=p.variant.model_copy(update={"local_download": False}))
    _, duration, _ = slotted.delay_terms(state, 0, size, work / size, no_local, result=result)
    assert duration[0] == pytest.approx(2.0 / 10)


def test_no_deadline_means_no_failure_in_both_models():
    for model in ("slotted", "event"):
        sc = Scenario(preset="dedgeai", model=model, slots=6)
        df, _ = run(sc, "local", 1, engine="python", progress=False)
        assert df.failure_rate[0] == 0.0
        assert np.isfinite(df.mean_makespan[0]) and df.mean_makespan[0] > 0


def test_event_model_downloads_the_result_over_a_fifo_link():
    # one BS, one task per slot (N = 1): local compute, then the result over the download link
    sc = Scenario(
        preset="dedgeai",
        model="event",
        n_bs=1,
        capacities=(10.0,),
        rates=(400.0,),
        tasks_per_slot=1,
        slots=3,
    )
    df, tasks = run(sc, "local", 1, engine="python", progress=False, keep_tasks=True)
    work = tasks["size"] * tasks["density"]
    expected = work / 10.0 + tasks["result"] / 400.0  # the queue is empty at each slot start (w < 10)
    assert np.allclose(tasks["latency"], expected)


def test_compiled_kernel_equals_python_path_on_dedgeai():
    sc = Scenario(preset="dedgeai", slots=8)
    py, _ = run(sc, "best-single", 2, engine="python", progress=False)
    jx, _ = run(sc, "best-single", 2, engine="compiled", progress=False)
    assert np.array_equal(py.mean_makespan.values, jx.mean_makespan.values)


@pytest.mark.parametrize("name", ["optimal", "amcoedge"])
def test_subset_schedulers_refuse_twenty_servers_by_name(name):
    with pytest.raises(SchedulerError, match=rf"'{name}'.*n_bs = 20.*1048575.*n_bs <= 16"):
        run(Scenario(preset="dedgeai", slots=3), name, 1, engine="python", progress=False)


BAD = [
    ({"preset": "dedgeai", "arrivals": "bernoulli"}, "arrivals = 'bernoulli'"),
    ({"arrivals": "uniform_count"}, "preset = 'amcoedge'"),
    ({"workload": "steps"}, "workload = 'steps'"),
    ({"deadline": None, "preset": "drlcoedge"}, "wait_clip_to_deadline"),
    ({"deadline": None, "model": "event", "deadline_policy": "drop"}, "deadline_policy"),
    ({"result_follows_work": True}, "result_range"),
    ({"preset": "dedgeai", "steps_range": (0, 5)}, "steps_range"),
    ({"preset": "dedgeai", "result_range": (1.0, 0.5)}, "result_range"),
]


@pytest.mark.parametrize("fields,needle", BAD, ids=[n for _, n in BAD])
def test_inconsistent_scenarios_are_refused_by_name(fields, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        build_scenario(fields)
