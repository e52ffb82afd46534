"""The event model: FIFO links and edge-server queues, hand-computed latencies, deadline policies."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from mecsim.arrivals import Trace, episode_trace
from mecsim.config import Scenario
from mecsim.engine import Simulation
from mecsim.models.event_model import EventModel
from mecsim.plugins import make_scheduler
from mecsim.scheduling import Decision, Scheduler, SchedulerError
from mecsim.tasklog import TaskLog

F = (10.0, 20.0)  # Gcycles/s
R = (400.0, 500.0)  # Mbit/s, by destination


def scenario(**kw) -> Scenario:
    base = dict(
        n_bs=2,
        capacities=F,
        rates=R,
        slots=2,
        tasks_per_slot=1,
        arrival_prob=1.0,
        deadline=1.0,
        slot_length=1.0,
        model="event",
    )
    base.update(kw)
    return Scenario(**base)


def make_trace(sc: Scenario, tasks: dict, density: float = 0.2) -> Trace:
    """``tasks`` maps (slot, bs, n) to a size or a (size, density) pair."""
    shape = (sc.slots, sc.n_bs, sc.tasks_per_slot)
    sizes = np.zeros(shape)
    densities = np.full(shape, density)
    for key, value in tasks.items():
        size, rho = value if isinstance(value, tuple) else (value, density)
        sizes[key] = size
        densities[key] = rho
    return Trace(sizes, densities)


class Fixed(Scheduler):
    """Returns a given decision per (slot, bs, task); records what it saw."""

    name = "fixed"

    def __init__(self, sc, plan, default=None):
        super().__init__(sc)
        self.plan = plan
        self.default = default
        self.seen = []

    def decide(self, obs):
        self.seen.append(obs)
        choice = self.plan.get((obs.slot, obs.bs, obs.task), self.default)
        if choice is None:
            return Decision.to(obs.bs, obs.n_servers)
        return choice


class Recorder(Fixed):
    """A learner-like scheduler that keeps its slot feedback."""

    def __init__(self, sc, plan, default=None):
        super().__init__(sc, plan, default)
        self.feedback = []

    def on_slot_end(self, feedback):
        self.feedback.append(feedback)


def run(sc, scheduler, trace):
    """Drive the model as the engine does, returning the model and the filled log."""
    log = TaskLog(sc, trace, 0)
    model = EventModel(sc, scheduler)
    env = simpy.Environment()
    env.process(model.process(env, trace, log))
    env.run()
    return model, log


# -- hand-computed single tasks -------------------------------------------------------------------
@pytest.mark.parametrize(
    "fractions, expected",
    [
        ((1.0, 0.0), 4 * 0.2 / 10),  # local: compute only
        ((0.0, 1.0), 4 / 500 + 4 * 0.2 / 20),  # remote: upload, then compute at ES 1
        ((0.25, 0.75), max(0.25 * 4 * 0.2 / 10, 0.75 * 4 / 500 + 0.75 * 4 * 0.2 / 20)),  # split
        ((0.5, 0.5), max(0.5 * 4 * 0.2 / 10, 0.5 * 4 / 500 + 0.5 * 4 * 0.2 / 20)),
    ],
)
def test_single_task_latency(fractions, expected):
    sc = scenario()
    trace = make_trace(sc, {(0, 0, 0): 4.0})
    model, log = run(sc, Fixed(sc, {(0, 0, 0): np.array(fractions)}), trace)
    assert len(log) == 1
    assert log.latency[0] == pytest.approx(expected, rel=1e-12)
    assert not log.failed[0]
    assert log.reward[0] == pytest.approx(-expected)
    assert log.subset[0].tolist() == [f > 0 for f in fractions]
    assert log.fractions[0].tolist() == list(fractions)
    work = 4 * 0.2 * np.array(fractions)
    np.testing.assert_allclose(model.total_served, work, rtol=1e-12)


def test_subset_without_fractions_is_allocated_by_the_rule():
    sc = scenario()  # CWA; empty system, so x ∝ 1/D and both shares finish together
    trace = make_trace(sc, {(0, 0, 0): 4.0, (0, 1, 0): 3.0})
    plan = {(0, 0, 0): Decision.split([0, 1], 2), (0, 1, 0): Decision(np.array([1.0, 0.0]))}
    _, log = run(sc, Fixed(sc, plan), trace)
    d_local, d_remote = 0.8 / 10, 0.8 / 20 + 4 / 500
    x0 = (1 / d_local) / (1 / d_local + 1 / d_remote)
    np.testing.assert_allclose(log.fractions[0], [x0, 1 - x0], rtol=1e-12)
    assert log.latency[0] == pytest.approx(x0 * d_local, rel=1e-12)
    # a singleton subset takes the whole task: BS 1's task queues behind BS 0's share at ES 0
    assert log.fractions[1].tolist() == [1.0, 0.0]
    assert log.latency[1] == pytest.approx(x0 * d_local + 0.6 / 10, rel=1e-12)


# -- queues ---------------------------------------------------------------------------------------
def test_es_fifo_second_task_waits_behind_first():
    sc = scenario(tasks_per_slot=2)
    trace = make_trace(sc, {(0, 0, 0): (4.0, 0.2), (0, 0, 1): (2.0, 0.3)})
    _, log = run(sc, Fixed(sc, {}), trace)  # both local at ES 0
    assert log.latency[0] == pytest.approx(0.8 / 10)
    assert log.latency[1] == pytest.approx((0.8 + 0.6) / 10)


def test_es_serves_in_order_of_arrival_at_the_es():
    # BS 0's task is decided first but must be uploaded; BS 1's local task reaches ES 1 first
    sc = scenario()
    trace = make_trace(sc, {(0, 0, 0): 4.0, (0, 1, 0): 3.0})
    plan = {(0, 0, 0): np.array([0.0, 1.0]), (0, 1, 0): np.array([0.0, 1.0])}
    _, log = run(sc, Fixed(sc, plan), trace)
    local_end = 3.0 * 0.2 / 20  # 0.03 s, served first
    upload = 4 / 500  # 0.008 s: arrives while ES 1 is busy
    assert log.latency[1] == pytest.approx(local_end)
    assert log.latency[0] == pytest.approx(max(upload, local_end) + 0.8 / 20)


def test_link_fifo_second_upload_waits():
    sc = scenario(tasks_per_slot=2)
    rho = 0.001  # compute is negligible, the link is the bottleneck
    trace = make_trace(sc, {(0, 0, 0): (4.0, rho), (0, 0, 1): (2.0, rho)})
    plan = {(0, 0, 0): np.array([0.0, 1.0]), (0, 0, 1): np.array([0.0, 1.0])}
    sched = Fixed(sc, plan)
    _, log = run(sc, sched, trace)
    assert log.latency[0] == pytest.approx(4 / 500 + 4 * rho / 20)
    assert log.latency[1] == pytest.approx(4 / 500 + 2 / 500 + 2 * rho / 20)
    # the second task saw the committed upload and the first job towards ES 1
    second = sched.seen[1]
    np.testing.assert_allclose(second.tx_backlog, [0.0, 4 / 500])
    np.testing.assert_allclose(second.current_backlog, [0.0, 4 * rho])
    assert second.wait[1] == pytest.approx(max(4 / 500, 4 * rho / 20))
    np.testing.assert_allclose(second.duration, [2 * rho / 10, 2 * rho / 20 + 2 / 500])


@pytest.mark.parametrize("topology", ["pair", "destination"])
def test_link_topology(topology):
    sc = scenario(n_bs=3, capacities=(10.0, 20.0, 30.0), rates=(400.0, 500.0, 600.0), link_topology=topology)
    rho = 0.001
    trace = make_trace(sc, {(0, 0, 0): (3.0, rho), (0, 1, 0): (3.0, rho)})
    to_2 = np.array([0.0, 0.0, 1.0])
    _, log = run(sc, Fixed(sc, {(0, 0, 0): to_2, (0, 1, 0): to_2}), trace)
    upload, compute = 3 / 600, 3 * rho / 30
    assert log.latency[0] == pytest.approx(upload + compute)
    if topology == "pair":
        # both uploads end together; ES 2 takes them in decision order
        assert log.latency[1] == pytest.approx(upload + 2 * compute)
    else:
        # one shared link into ES 2: BS 1's upload waits for BS 0's
        assert log.latency[1] == pytest.approx(2 * upload + compute)


def test_observation_backlog_counts_work_in_service():
    sc = scenario(slot_length=0.01, slots=3)
    trace = make_trace(sc, {(0, 0, 0): 4.0, (1, 0, 0): 1.0})
    sched = Fixed(sc, {(0, 0, 0): np.array([0.0, 1.0])})
    _, log = run(sc, sched, trace)
    first, second = sched.seen
    np.testing.assert_allclose(first.backlog, [0.0, 0.0])
    # at 0.01 s the job reached ES 1 at 0.008 s and has been served for 0.002 s
    np.testing.assert_allclose(second.backlog, [0.0, 0.8 - 0.002 * 20], rtol=1e-9)
    np.testing.assert_allclose(second.current_backlog, second.backlog)
    assert second.tx_backlog[1] == 0.0
    fractions, spans = second.evaluate(np.eye(2))
    np.testing.assert_allclose(spans, second.wait + second.duration)
    np.testing.assert_allclose(fractions, np.eye(2))


# -- deadlines, horizon, accounting ----------------------------------------------------------------
def _late_then_small(policy):
    # slot 0: 2 Gcycles at ES 0 (0.2 s > deadline 0.15); slot 1 (t = 0.1): 0.4 Gcycles at ES 0
    sc = scenario(slot_length=0.1, slots=3, deadline=0.15, deadline_policy=policy)
    trace = make_trace(sc, {(0, 0, 0): (10.0, 0.2), (1, 0, 0): (2.0, 0.2)})
    return sc, run(sc, Fixed(sc, {}), trace)


def test_keep_policy_finishes_late_work():
    sc, (model, log) = _late_then_small("keep")
    assert log.latency[0] == pytest.approx(0.2)
    assert log.failed[0] and log.reward[0] == pytest.approx(-10 * 0.15)
    assert log.makespan[0] == pytest.approx(0.15)  # the paper's metric caps it
    assert log.latency[1] == pytest.approx(0.2 + 0.04 - 0.1)
    assert not log.failed[1]
    assert model.total_served[0] == pytest.approx(2.4)
    assert model.served[0] == pytest.approx(2.0)  # horizon 0.2 s: the second job starts at 0.2


def test_drop_policy_removes_late_work():
    sc, (model, log) = _late_then_small("drop")
    assert np.isnan(log.latency[0]) and log.failed[0]
    assert log.reward[0] == pytest.approx(-10 * 0.15)
    # the server gives up at 0.15 s, so the next task starts earlier than under "keep"
    assert log.latency[1] == pytest.approx(0.15 + 0.04 - 0.1)
    assert not log.failed[1]
    assert model.total_served[0] == pytest.approx(1.5 + 0.4)
    assert model.served[0] == pytest.approx(1.5 + 0.4)  # both within the 0.2 s horizon


def test_drop_policy_frees_the_link_at_the_deadline():
    sc = scenario(slot_length=0.1, slots=3, deadline=0.15, deadline_policy="drop")
    rho = 0.001
    # a 100 Mbit upload needs 0.2 s on the 500 Mbit/s link into ES 1: cut at 0.15 s
    trace = make_trace(sc, {(0, 0, 0): (100.0, rho), (1, 0, 0): (5.0, rho)})
    to_1 = np.array([0.0, 1.0])
    _, log = run(sc, Fixed(sc, {}, default=to_1), trace)
    assert log.failed[0] and np.isnan(log.latency[0])
    assert log.latency[1] == pytest.approx(0.15 + 5 / 500 + 5 * rho / 20 - 0.1)
    _, kept = run(sc.replace(deadline_policy="keep"), Fixed(sc, {}, default=to_1), trace)
    assert kept.latency[1] == pytest.approx(0.2 + 5 / 500 + 5 * rho / 20 - 0.1)


def test_served_counts_only_the_horizon():
    sc = scenario()  # one decision slot: horizon 1 s
    trace = make_trace(sc, {(0, 0, 0): (5.0, 3.0)})  # 15 Gcycles on 10 GHz: 1.5 s
    model, log = run(sc, Fixed(sc, {}), trace)
    assert log.latency[0] == pytest.approx(1.5)
    np.testing.assert_allclose(model.served, [10.0, 0.0])
    np.testing.assert_allclose(model.total_served, [15.0, 0.0])


def _small_random(policy="keep", **kw):
    sc = Scenario(
        n_bs=3,
        capacities=(5.0, 10.0, 15.0),
        rates=(400.0, 450.0, 500.0),
        slots=6,
        tasks_per_slot=8,
        arrival_prob=0.6,
        deadline=0.5,
        model="event",
        deadline_policy=policy,
        seed=3,
        **kw,
    )
    return sc, episode_trace(sc, sc.seed, 0)


@pytest.mark.parametrize("name", ["local", "random", "optimal"])
@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_every_task_recorded_once(name, policy):
    sc, trace = _small_random(policy)
    model, log = run(sc, make_scheduler(name, sc), trace)
    assert len(log) > 0
    assert model.n_recorded == len(log)
    assert log.decided.all()
    np.testing.assert_allclose(log.fractions.sum(axis=1), 1.0)
    assert np.all(log.fractions[~log.subset] == 0)
    if policy == "keep":
        assert np.isfinite(log.latency).all()
        np.testing.assert_array_equal(log.failed, log.latency > sc.deadline)
    else:
        np.testing.assert_array_equal(np.isnan(log.latency), log.failed)
        assert (log.latency[~log.failed] <= sc.deadline + 1e-12).all()
    assert np.all(model.served <= np.asarray(sc.capacities) * sc.decision_slots * sc.slot_length + 1e-9)


@pytest.mark.parametrize("topology", ["pair", "destination"])
def test_keep_serves_all_assigned_work(topology):
    sc, trace = _small_random("keep", link_topology=topology)
    model, log = run(sc, make_scheduler("random", sc), trace)
    assigned = (log.fractions * (log.size * log.density)[:, None]).sum(axis=0)
    np.testing.assert_allclose(model.total_served, assigned, rtol=1e-12)
    assert np.all(model.served <= model.total_served + 1e-12)


def test_same_seed_same_output():
    sc, _ = _small_random("drop")
    frames = []
    for _ in range(2):
        sim = Simulation(sc, make_scheduler("random", sc))
        frames.append([sim.run_episode(e).log.frame() for e in range(2)])
    for a, b in zip(*frames):
        assert a.equals(b)


def test_batched_and_per_task_decisions_agree():
    sc, trace = _small_random("keep")
    _, batched = run(sc, make_scheduler("local", sc), trace)
    _, single = run(sc, Fixed(sc, {}), trace)  # local, one decide call per task
    np.testing.assert_array_equal(batched.latency, single.latency)
    np.testing.assert_array_equal(batched.fractions, single.fractions)


# -- learner feedback -----------------------------------------------------------------------------
def test_slot_feedback():
    sc = scenario(slots=3)  # slot 0: 15 Gcycles at ES 0 (1.5 s), still running at the end of the slot
    trace = make_trace(sc, {(0, 0, 0): (5.0, 3.0), (1, 1, 0): 2.0, (2, 0, 0): 4.0})
    sched = Recorder(sc, {})
    _, log = run(sc, sched, trace)
    first, second = sched.feedback
    assert first.slot == 0 and second.slot == 1
    # running task: decision-time estimate 1.5 s > deadline, reported failed
    assert first.makespan[0] == pytest.approx(1.5) and first.failed[0]
    assert first.reward[0] == pytest.approx(-10.0)
    np.testing.assert_allclose(first.backlog, [0.0, 0.0])
    np.testing.assert_allclose(first.next_backlog, [5.0, 0.0])
    np.testing.assert_array_equal(first.next_sizes, trace.sizes[1])
    # finished task: true outcome, as in the log
    assert second.makespan[0] == log.latency[1] == pytest.approx(0.4 / 20)
    assert second.reward[0] == log.reward[1]
    np.testing.assert_allclose(second.next_backlog, [0.0, 0.0])
    np.testing.assert_array_equal(second.next_sizes, trace.sizes[2])


# -- invalid decisions ----------------------------------------------------------------------------
class BadFractions(Scheduler):
    name = "bad-fractions"

    def decide(self, obs):
        return np.array([0.5, 0.6])


class BadSlot(Scheduler):
    name = "bad-slot"

    def decide(self, obs):  # pragma: no cover - decide_slot is used
        return Decision.to(obs.bs, obs.n_servers)

    def decide_slot(self, obs):
        return Decision(np.ones((len(obs), 3)), None)


@pytest.mark.parametrize("cls", [BadFractions, BadSlot])
def test_invalid_decision_names_the_scheduler(cls):
    sc = scenario()
    trace = make_trace(sc, {(0, 0, 0): 4.0})
    with pytest.raises(SchedulerError, match=cls.name):
        Simulation(sc, cls(sc)).run_episode(0, trace=trace)
