"""Faults in the simulated system: hand-computed outages, slow-downs and link degradation, random
fault processes, observability, and the compiled kernel against the Python path."""

from __future__ import annotations

import numpy as np
import pytest

from mecsim.arrivals import Trace
from mecsim.config import ConfigError, Scenario, build_scenario
from mecsim.engine import Simulation
from mecsim.faults import Faults, Profile
from mecsim.plugins import make_scheduler
from mecsim.runner import run
from mecsim.scheduling import Decision, Scheduler

# two servers of 10 and 20 GHz; one task slot per BS; slots of 1 s
BASE = dict(n_bs=2, capacities=(10.0, 20.0), rates=(400.0, 400.0), tasks_per_slot=1, slots=4, deadline=10.0)


def scenario(faults=None, **kw) -> Scenario:
    return build_scenario({**BASE, **kw}, {"faults": faults} if faults else {})


def window(target="server", index=0, start=0.0, end=1.0, factor=0.0) -> dict:
    return {"target": target, "index": index, "start": start, "end": end, "factor": factor}


class Fixed(Scheduler):
    """Every task of BS b to the servers and fractions given for b."""

    def __init__(self, scenario, plan):
        super().__init__(scenario)
        self.plan = plan

    def decide(self, obs):
        fractions = np.asarray(self.plan[obs.bs], float)
        return Decision((fractions > 0).astype(float), fractions)


def one_trace(sc: Scenario, tasks: dict[tuple[int, int], tuple[float, float]]) -> Trace:
    """A trace with the given (slot, BS) -> (size Mbit, density Gcycles/Mbit) tasks (one task slot per BS)."""
    sizes = np.zeros((sc.slots, sc.n_bs, 1))
    densities = np.ones((sc.slots, sc.n_bs, 1))
    for (t, b), (size, density) in tasks.items():
        sizes[t, b, 0], densities[t, b, 0] = size, density
    return Trace(sizes, densities)


def latencies(sc, plan, tasks) -> np.ndarray:
    result = Simulation(sc, Fixed(sc, plan)).run_episode(0, trace=one_trace(sc, tasks))
    return result.log.latency


# -- event model: exact ------------------------------------------------------------------------------
def test_an_outage_delays_exactly_the_work_in_service_and_queued_behind_it():
    # two local tasks on ES 0 (10 GHz) at t = 0 and t = 1: 15 and 5 Gcycles, i.e. 1.5 s and 0.5 s of work
    tasks = {(0, 0): (15.0, 1.0), (1, 0): (5.0, 1.0)}
    plan = {0: [1.0, 0.0], 1: [0.0, 1.0]}
    clean = latencies(scenario(model="event"), plan, tasks)
    np.testing.assert_allclose(clean, [1.5, 1.0])  # the second waits 0.5 s behind the first
    down = latencies(scenario({"windows": [window(start=0.5, end=1.25)]}, model="event"), plan, tasks)
    # 0.75 s of outage: the first ends at 2.25, the second starts then and ends at 2.75 (1.75 after its arrival)
    np.testing.assert_allclose(down, [2.25, 1.75])
    slow = latencies(
        scenario({"windows": [window(start=0.0, end=1.0, factor=0.5)]}, model="event"), plan, tasks
    )
    # half speed for 1 s: 5 Gcycles done by t = 1, the other 10 take 1 s more; the second ends at 2.5
    np.testing.assert_allclose(slow, [2.0, 1.5])


def test_a_degraded_link_slows_the_upload():
    # BS 0 sends 8 Mbit of zero-density work to ES 1 over a 400 Mbit/s link: 0.02 s
    tasks = {(0, 0): (8.0, 1e-9)}
    plan = {0: [0.0, 1.0], 1: [0.0, 1.0]}
    clean = latencies(scenario(model="event"), plan, tasks)
    slow = latencies(scenario({"windows": [window("link", 1, 0.0, 1.0, 0.25)]}, model="event"), plan, tasks)
    np.testing.assert_allclose(clean, [0.02], atol=1e-9)
    np.testing.assert_allclose(slow, [0.08], atol=1e-9)  # a quarter of the rate: four times as long


def test_served_work_counts_the_outage():
    sc = scenario({"windows": [window(start=0.0, end=2.0)]}, model="event", slots=3)  # horizon 2 s
    result = Simulation(sc, Fixed(sc, {0: [1.0, 0.0], 1: [0.0, 1.0]})).run_episode(
        0, trace=one_trace(sc, {(0, 0): (30.0, 1.0)})
    )
    assert result.metrics["utilisation"][0] == 0.0  # down for the whole horizon: nothing served
    np.testing.assert_allclose(result.log.latency, [5.0])  # 2 s down, then 3 s of work


# -- slotted model: per-slot mean speed --------------------------------------------------------------
def test_slotted_capacity_is_the_slots_mean_factor():
    # ES 0 down for the first half of slot 0: slot 0 runs at 5 GHz, so a 5-Gcycle local task takes 1 s
    tasks = {(0, 0): (5.0, 1.0)}
    plan = {0: [1.0, 0.0], 1: [0.0, 1.0]}
    np.testing.assert_allclose(latencies(scenario(), plan, tasks), [0.5])
    np.testing.assert_allclose(latencies(scenario({"windows": [window(end=0.5)]}), plan, tasks), [1.0])


def test_slotted_server_down_for_a_whole_slot_fails_its_tasks_and_keeps_its_queue():
    sc = scenario({"windows": [window(end=1.0)]}, slots=3)
    result = Simulation(sc, Fixed(sc, {0: [1.0, 0.0], 1: [0.0, 1.0]})).run_episode(
        0, trace=one_trace(sc, {(0, 0): (5.0, 1.0), (0, 1): (5.0, 1.0)})
    )
    log = result.log
    assert log.failed.tolist() == [True, False] and np.isinf(log.latency[0])
    assert log.makespan[0] == sc.deadline  # the paper's metric counts a failure at the deadline
    assert result.metrics["utilisation"][0] == pytest.approx(5.0 / 20.0)  # served in slot 1 only, horizon 2 s


def test_a_split_avoids_a_server_that_is_down():
    sc = scenario({"windows": [window(index=1, end=1.0)]}, slots=2)
    result = Simulation(sc, make_scheduler("optimal", sc)).run_episode(
        0, trace=one_trace(sc, {(0, 0): (4.0, 1.0)})
    )
    assert result.log.subset[0].tolist() == [True, False] and not result.log.failed[0]


# -- observability --------------------------------------------------------------------------------
class Seeing(Scheduler):
    """Records the waits it sees and sends everything local."""

    def __init__(self, scenario):
        super().__init__(scenario)
        self.waits = []

    def decide(self, obs):
        self.waits.append(obs.wait.copy())
        return Decision.to(obs.bs, obs.n_servers)


@pytest.mark.parametrize("model", ["slotted", "event"])
@pytest.mark.parametrize("observable", [True, False])
def test_schedulers_see_current_speeds_only_when_observable(model, observable):
    faults = {"windows": [window(index=1, end=3.0)], "observable": observable}
    sc = scenario(faults, model=model)
    seeing = Seeing(sc)
    Simulation(sc, seeing).run_episode(0, trace=one_trace(sc, {(0, 0): (5.0, 1.0)}))
    assert np.isinf(seeing.waits[0][1]) == observable  # ES 1 is down: an infinite wait when seen


# -- random processes ----------------------------------------------------------------------------------
def test_random_processes_are_reproducible_and_down_as_often_as_their_means_say():
    sc = scenario(
        {"processes": [{"target": "server", "mean_up": 3.0, "mean_down": 1.0, "factor": 0.0}]}, slots=2
    )
    a, b = sc.fault_profile(0), sc.fault_profile(0)
    horizon = 4000.0
    down = [horizon - a.done("server", i, 0.0, horizon, 1.0) for i in range(2)]
    assert down == [horizon - b.done("server", i, 0.0, horizon, 1.0) for i in range(2)]
    assert sc.fault_profile(1).done("server", 0, 0.0, horizon, 1.0) != a.done("server", 0, 0.0, horizon, 1.0)
    for d in down:  # unavailability 1/4; about 1000 cycles of 4 s: a 5-sigma band is about +-0.04
        assert abs(d / horizon - 0.25) < 0.04
    assert a.factor_at("server", 0, 0.0) == 1.0  # every target starts up


def test_a_finish_does_not_depend_on_how_far_the_faults_were_drawn():
    """A finish past the drawn realisation is not trusted: the realisation is drawn further first (it once
    returned a finish inside what was still an undrawn down time)."""
    faults = Faults(
        processes=[{"target": "server", "mean_up": 0.12, "mean_down": 0.18}]
    )  # up 40 % of the time
    differed = []
    for seed in range(40):
        for start, amount in [(0.0, 0.64), (0.3, 1.2), (1.0, 2.0)]:  # 0.3-1 s of service at 2 Gcycles/s
            fresh, far = Profile(faults, 1, seed, 0), Profile(faults, 1, seed, 0)
            far.segments("server", 0, 100.0)
            got, want = (
                fresh.finish("server", 0, start, amount, 2.0),
                far.finish("server", 0, start, amount, 2.0),
            )
            differed += [(seed, start)] if got != want else []
    assert differed == []


def test_overlapping_faults_multiply():
    faults = {"windows": [window(end=2.0, factor=0.5), window(start=1.0, end=3.0, factor=0.5)]}
    p = Profile(build_scenario(BASE, {"faults": faults}).faults, 2, 0, 0)
    assert [p.factor_at("server", 0, t) for t in (0.5, 1.5, 2.5, 3.5)] == [0.5, 0.25, 0.5, 1.0]
    assert p.finish("server", 0, 0.0, 1.0, 1.0) == pytest.approx(2.5)  # 0.5 by t=1, 0.75 by t=2, 1.0 at t=2.5


# -- the compiled kernel ---------------------------------------------------------------------------------
@pytest.mark.parametrize("observable", [True, False])
@pytest.mark.parametrize(
    "name, model",
    [("optimal", "slotted"), ("best-single", "slotted"), ("local", "slotted"), ("best-single", "event")],
)
def test_the_kernel_runs_faults_as_the_python_path_does(name, model, observable):
    faults = {
        "processes": [{"target": "server", "mean_up": 2.0, "mean_down": 1.0}],
        "windows": [window("link", 1, 0.5, 2.5, 0.3)],
        "observable": observable,
    }
    point = dict(
        n_bs=3,
        capacities=(5, 10, 20),
        rates=(300, 400, 500),
        tasks_per_slot=6,
        slots=8,
        arrival_prob=0.6,
        deadline=1.5,
        model=model,
    )
    sc = build_scenario(point, {"faults": faults})
    python, _ = run(sc, name, 3, engine="python", progress=False, timing=False)
    compiled, _ = run(sc, name, 3, engine="compiled", progress=False, timing=False)
    for column in ("mean_makespan", "failure_rate", "mean_reward", "mean_utilisation"):
        np.testing.assert_allclose(compiled[column], python[column], rtol=0, atol=1e-9, err_msg=column)
    clean, _ = run(build_scenario(point), name, 3, engine="python", progress=False, timing=False)
    assert python["mean_makespan"].sum() > clean["mean_makespan"].sum()  # the faults bite


def test_bad_faults_are_refused():
    for faults, message in [
        ({"windows": [window(index=2)]}, "fault targets \\[2\\] do not exist"),
        ({"windows": [window(start=2.0, end=1.0)]}, "must be after start"),
        ({"windows": [window(factor=1.5)]}, "factor"),
        ({"processes": [{"target": "server", "mean_up": 0, "mean_down": 1}]}, "mean_up"),
        ({"processes": [{"target": "disk", "mean_up": 1, "mean_down": 1}]}, "target"),
    ]:
        with pytest.raises(ConfigError, match=message):
            scenario(faults)


@pytest.mark.parametrize("model", ["slotted", "event"])
def test_learners_train_under_faults_on_both_engines_alike(model):
    """One seed, exploration included: the kernel's training loop takes the SimPy path's steps under faults too."""
    from mecsim.training import train

    faults = {"processes": [{"target": "server", "mean_up": 2.0, "mean_down": 1.0}]}
    sc = build_scenario(
        dict(BASE, tasks_per_slot=4, slots=6, arrival_prob=0.7, deadline=1.0, model=model), {"faults": faults}
    )
    options = dict(learn_start=2, learn_every=1, batch_size=4, greedy_increment=0.05)
    a = train(
        sc, "amcoedge", 4, eval_episodes=1, options=options, engine="python", progress=False, timing=False
    )
    b = train(
        sc, "amcoedge", 4, eval_episodes=1, options=options, engine="compiled", progress=False, timing=False
    )
    assert a.scheduler.learn_step == b.scheduler.learn_step > 0
    np.testing.assert_allclose(b.episodes["mean_makespan"], a.episodes["mean_makespan"], rtol=0, atol=1e-12)
