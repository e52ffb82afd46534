"""Fuzzing: random scenarios (1 to 8 servers, random speeds, loads, deadlines, rules, presets, faults) with every
built-in scheduler, in both delay models: every task recorded once, work conserved, no NaN in a metric, failures
counted consistently; and the compiled kernel equal to the Python path."""

from __future__ import annotations

import math

import numpy as np
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mecsim.arrivals import episode_trace
from mecsim.config import build_scenario
from mecsim.models import make_model
from mecsim.plugins import make_scheduler
from mecsim.runner import run
from mecsim.streams import stream
from mecsim.tasklog import TaskLog, episode_metrics

BUILTIN = ["local", "random", "optimal", "best-single", "amcoedge", "drlcoedge", "smcoedge", "smcoedge-topk"]
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def fault_specs(draw, n: int):
    if not draw(st.booleans()):
        return {}
    windows = [
        {
            "target": draw(st.sampled_from(["server", "link"])),
            "index": draw(st.integers(0, n - 1)),
            "start": start,
            "end": start + draw(st.floats(0.05, 2.0)),
            "factor": draw(st.sampled_from([0.0, 0.3])),
        }
        for start in draw(st.lists(st.floats(0.0, 2.0), max_size=2))
    ]
    processes = (
        [
            {
                "target": draw(st.sampled_from(["server", "link"])),
                "mean_up": draw(st.floats(0.3, 5.0)),
                "mean_down": draw(st.floats(0.1, 2.0)),
                "factor": draw(st.sampled_from([0.0, 0.5])),
            }
        ]
        if draw(st.booleans())
        else []
    )
    return {"windows": windows, "processes": processes, "observable": draw(st.booleans())}


@st.composite
def scenarios(draw, models=("slotted", "event")):
    n = draw(st.integers(1, 8))
    model = draw(st.sampled_from(models))
    fields = dict(
        n_bs=n,
        capacities=draw(st.lists(st.floats(1.0, 80.0), min_size=n, max_size=n)),
        rates=draw(st.lists(st.floats(10.0, 800.0), min_size=n, max_size=n)),
        tasks_per_slot=draw(st.integers(1, 4)),
        slots=draw(st.integers(2, 4)),
        arrival_prob=draw(st.sampled_from([0.0, 0.2, 0.6, 1.0])),
        slot_length=draw(st.sampled_from([0.2, 1.0])),
        deadline=draw(st.sampled_from([0.05, 0.4, 2.0])),
        model=model,
        allocation=draw(st.sampled_from(["cwa", "hecwa", "waterfill"])),
        preset=draw(st.sampled_from(["amcoedge", "randcoedge", "drlcoedge", "smcoedge", "optimal"])),
        seed=draw(st.integers(0, 10_000)),
    )
    if model == "event":
        fields.update(
            deadline_policy=draw(st.sampled_from(["keep", "drop"])),
            link_topology=draw(st.sampled_from(["pair", "destination"])),
        )
    return build_scenario(fields, {"faults": draw(fault_specs(n))} if n else {})


def scheduler_for(name: str, scenario):
    options = {"k": min(3, scenario.n_bs)} if name.startswith("smcoedge") else {}
    if name in ("amcoedge", "drlcoedge", "smcoedge", "smcoedge-topk"):
        options.update(learn_start=0, learn_every=1, batch_size=4)  # learn within the short episode
    return make_scheduler(name, scenario, rng=stream(scenario.seed, "scheduler"), **options)


def episode(scenario, scheduler):
    """(model, log, metrics) of episode 0, the model kept to read its final state."""
    trace = episode_trace(scenario, scenario.seed, 0)
    log = TaskLog(scenario, trace, 0)
    model = make_model(scenario, scheduler)
    env = simpy.Environment()
    env.process(model.process(env, trace, log, scenario.fault_profile(0)))
    env.run()
    horizon = scenario.decision_slots * scenario.slot_length
    return (
        model,
        log,
        episode_metrics(log, model.served, np.asarray(scenario.capacities, float), horizon),
        trace,
    )


@FUZZ
@given(scenarios(), st.sampled_from(BUILTIN))
def test_every_scheduler_keeps_the_invariants(scenario, name):
    model, log, metrics, trace = episode(scenario, scheduler_for(name, scenario))
    decided = np.asarray(trace.sizes)[: scenario.decision_slots]
    # every task recorded exactly once, decided, in decision order
    assert len(log) == np.count_nonzero(decided) == metrics["n_tasks"]
    assert log.decided.all()
    np.testing.assert_allclose(log.fractions.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(log.fractions >= 0) and np.all(log.fractions[~log.subset] == 0)
    # failures and rewards counted consistently
    assert metrics["n_failed"] == int(log.failed.sum())
    dropped = np.isnan(log.latency)
    if scenario.model == "event" and scenario.deadline_policy == "drop":
        np.testing.assert_array_equal(log.failed, dropped)
    else:
        assert not dropped.any()
        np.testing.assert_array_equal(log.failed, log.latency > scenario.deadline)
    np.testing.assert_array_equal(log.makespan[log.failed], scenario.deadline)
    penalty = scenario.variant.fail_penalty * scenario.deadline
    np.testing.assert_allclose(
        log.reward, np.where(log.failed, -penalty, -np.nan_to_num(log.latency)), atol=0
    )
    # no NaN in any metric (a latency mean needs a task that finished)
    if len(log):
        for key, value in metrics.items():
            values = np.atleast_1d(value).astype(float)
            if key == "mean_latency" and not np.isfinite(log.latency).any():
                continue
            assert not np.isnan(values).any(), key
        assert metrics["failure_rate"] == log.failed.mean()
    # work conserved: what was assigned is served, or still queued (or dropped)
    work = float((log.fractions * (log.size * log.density)[:, None]).sum())
    if scenario.model == "slotted":
        kept = (
            work
            if scenario.variant.enqueue_failed_work
            else float((log.fractions[~log.failed] * (log.size * log.density)[~log.failed, None]).sum())
        )
        left = float(model.state.backlog.sum())
        assert math.isclose(float(model.served.sum()) + left, kept, rel_tol=1e-9, abs_tol=1e-9)
    elif scenario.deadline_policy == "keep":
        assert math.isclose(float(model.total_served.sum()), work, rel_tol=1e-9, abs_tol=1e-9)
    else:
        assert float(model.total_served.sum()) <= work * (1 + 1e-9) + 1e-9
    util = np.asarray(metrics["utilisation"])
    assert np.all(util >= 0) and np.all(util <= 1 + 1e-9)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(models=("slotted",)), st.sampled_from(["optimal", "best-single", "local"]))
def test_the_kernel_equals_the_python_path_on_random_scenarios(scenario, name):
    python, _ = run(scenario, name, 2, engine="python", progress=False, timing=False)
    compiled, _ = run(scenario, name, 2, engine="compiled", progress=False, timing=False)
    for column in ("mean_makespan", "failure_rate", "mean_reward", "mean_utilisation", "n_tasks"):
        np.testing.assert_allclose(compiled[column], python[column], rtol=0, atol=1e-9, err_msg=column)
