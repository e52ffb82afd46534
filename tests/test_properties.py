"""Whole-episode invariants of the slotted engine over random tiny scenarios and random valid schedulers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mecsim.arrivals import episode_trace
from mecsim.config import Scenario
from mecsim.engine import Simulation
from mecsim.scheduling import Decision, Scheduler


class _Recording(Scheduler):
    """Keeps every backlog it is shown, to check that none goes negative."""

    def __init__(self, scenario, rng=None):
        super().__init__(scenario, rng)
        self.backlogs = []

    def on_slot_end(self, feedback):
        self.backlogs.append(np.asarray(feedback.backlog))
        self.backlogs.append(np.asarray(feedback.next_backlog))


class RandomFractions(_Recording):
    """Plain fraction vectors over a random subset (some members may get exactly 0)."""

    name = "random-fractions"

    def decide(self, obs):
        self.backlogs.append(obs.current_backlog)
        n = obs.n_servers
        k = int(self.rng.integers(1, n + 1))
        members = self.rng.choice(n, size=k, replace=False)
        x = np.zeros(n)
        x[members] = self.rng.dirichlet(np.ones(k))
        return x


class RandomSubsets(_Recording):
    """A random subset; the scenario's allocation rule chooses the fractions."""

    name = "random-subsets"

    def decide(self, obs):
        self.backlogs.append(obs.current_backlog)
        n = obs.n_servers
        mask = np.zeros(n)
        mask[self.rng.choice(n, size=int(self.rng.integers(1, n + 1)), replace=False)] = 1.0
        return Decision(mask, None)


class RandomBatches(_Recording):
    """Whole slots at once, alternating explicit fractions and subsets-only."""

    name = "random-batches"

    def decide(self, obs):  # pragma: no cover - the engine prefers decide_slot
        raise AssertionError("decide_slot should be used")

    def decide_slot(self, obs):
        n, k = obs.scenario.n_bs, len(obs)
        subsets = (self.rng.random((k, n)) < 0.5).astype(float)
        subsets[np.arange(k), self.rng.integers(n, size=k)] = 1.0
        if self.rng.random() < 0.5:
            return Decision(subsets, None)
        weights = self.rng.random((k, n)) * subsets
        weights[subsets.sum(axis=1) == 1] = subsets[subsets.sum(axis=1) == 1]
        weights[weights.sum(axis=1) == 0] = subsets[weights.sum(axis=1) == 0]
        return Decision(subsets, weights / weights.sum(axis=1, keepdims=True))


SCHEDULERS = [RandomFractions, RandomSubsets, RandomBatches]


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 4))
    return Scenario(
        n_bs=n,
        capacities=tuple(draw(st.lists(st.floats(2.0, 60.0), min_size=n, max_size=n))),
        rates=tuple(draw(st.lists(st.floats(20.0, 600.0), min_size=n, max_size=n))),
        tasks_per_slot=draw(st.integers(1, 5)),
        slots=draw(st.integers(2, 4)),
        arrival_prob=draw(st.sampled_from([0.0, 0.3, 0.7, 1.0])),
        slot_length=draw(st.sampled_from([0.1, 0.5, 1.0])),
        deadline=draw(st.sampled_from([0.05, 0.3, 1.0])),
        preset=draw(st.sampled_from(["amcoedge", "randcoedge", "drlcoedge", "smcoedge", "optimal"])),
        allocation=draw(st.sampled_from(["cwa", "hecwa", "waterfill"])),
        seed=draw(st.integers(0, 1000)),
    )


def _run(scenario, cls, episode=0):
    sched = cls(scenario)
    return sched, Simulation(scenario, sched).run_episode(episode)


def _check_invariants(scenario, sched, result):
    log = result.log
    sizes = episode_trace(scenario, scenario.seed, result.episode).sizes
    decided_sizes = sizes[: scenario.decision_slots]
    # every task of a decision slot recorded exactly once, in C order, and decided
    assert len(log) == np.count_nonzero(decided_sizes)
    slot, bs, task = np.nonzero(decided_sizes)
    np.testing.assert_array_equal(log.slot, slot)
    np.testing.assert_array_equal(log.bs, bs)
    np.testing.assert_array_equal(log.task, task)
    np.testing.assert_array_equal(log.size, decided_sizes[slot, bs, task])
    assert log.decided.all()
    assert result.metrics["n_tasks"] == len(log)
    # fractions form a distribution inside the subset
    np.testing.assert_allclose(log.fractions.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(log.fractions >= 0)
    assert np.all(log.fractions[~log.subset] == 0)
    assert np.all(log.subset.sum(axis=1) >= 1)
    # backlogs never go negative
    for backlog in sched.backlogs:
        assert np.all(np.asarray(backlog) >= 0)
    # latency, paper make-span, failure and reward are consistent
    assert np.all(np.isfinite(log.latency))
    assert np.all(log.latency > 0)
    np.testing.assert_array_equal(log.failed, log.latency > scenario.deadline)
    assert np.all(log.makespan <= scenario.deadline)
    np.testing.assert_array_equal(log.makespan[log.failed], scenario.deadline)
    np.testing.assert_array_equal(log.makespan[~log.failed], log.latency[~log.failed])
    penalty = scenario.variant.fail_penalty * scenario.deadline
    np.testing.assert_array_equal(log.reward, np.where(log.failed, -penalty, -log.latency))
    if len(log):
        assert result.metrics["failure_rate"] == log.failed.mean()
        assert abs(result.metrics["mean_makespan"] - log.makespan.mean()) < 1e-12
    # the queues serve at most their capacity
    util = np.asarray(result.metrics["utilisation"])
    assert np.all(util >= 0) and np.all(util <= 1 + 1e-12)


PROPS = settings(max_examples=25, deadline=None)


@PROPS
@given(scenarios(), st.sampled_from(SCHEDULERS))
def test_episode_invariants(scenario, cls):
    sched, result = _run(scenario, cls)
    _check_invariants(scenario, sched, result)


@PROPS
@given(scenarios(), st.sampled_from(SCHEDULERS))
def test_same_seed_same_results(scenario, cls):
    _, a = _run(scenario, cls)
    _, b = _run(scenario, cls)
    np.testing.assert_array_equal(a.log.subset, b.log.subset)
    np.testing.assert_array_equal(a.log.fractions, b.log.fractions)
    np.testing.assert_array_equal(a.log.latency, b.log.latency)
    np.testing.assert_array_equal(a.log.failed, b.log.failed)
    np.testing.assert_array_equal(a.log.reward, b.log.reward)
    assert a.metrics == b.metrics


@PROPS
@given(scenarios())
def test_episodes_are_random_access(scenario):
    # episode 1 does not depend on whether episode 0 ran before it (fresh scheduler each time)
    sim = Simulation(scenario, RandomSubsets(scenario))
    sim.run_episode(0)
    after = sim.run_episode(1)
    fresh = Simulation(scenario, RandomSubsets(scenario))
    direct = fresh.run_episode(1)
    np.testing.assert_array_equal(after.log.size, direct.log.size)
    np.testing.assert_array_equal(after.log.density, direct.log.density)


@PROPS
@given(scenarios(), st.integers(0, 3))
def test_batched_and_per_task_paths_agree_on_explicit_fractions(scenario, salt):
    """The same fixed decisions through decide() and through decide_slot() give the same episode."""
    trace = episode_trace(scenario, scenario.seed, 0)
    n_tasks = np.count_nonzero(trace.sizes[: scenario.decision_slots])
    rng = np.random.default_rng(salt)
    n = scenario.n_bs
    subsets = (rng.random((n_tasks, n)) < 0.5).astype(float)
    subsets[np.arange(n_tasks), rng.integers(n, size=n_tasks)] = 1.0
    weights = rng.random((n_tasks, n)) * subsets + 1e-3 * subsets
    fractions = weights / weights.sum(axis=1, keepdims=True)

    class PerTask(Scheduler):
        name = "per-task"

        def __init__(self, sc):
            super().__init__(sc)
            self.k = 0

        def decide(self, obs):
            self.k += 1
            return Decision(subsets[self.k - 1], fractions[self.k - 1])

    class Batched(Scheduler):
        name = "batched"

        def __init__(self, sc):
            super().__init__(sc)
            self.k = 0

        def decide(self, obs):  # pragma: no cover
            raise AssertionError

        def decide_slot(self, obs):
            rows = slice(self.k, self.k + len(obs))
            self.k += len(obs)
            return Decision(subsets[rows], fractions[rows])

    a = Simulation(scenario, PerTask(scenario)).run_episode(0, trace=trace).log
    b = Simulation(scenario, Batched(scenario)).run_episode(0, trace=trace).log
    np.testing.assert_array_equal(a.fractions, b.fractions)
    np.testing.assert_array_equal(a.latency, b.latency)
    np.testing.assert_array_equal(a.failed, b.failed)
    np.testing.assert_array_equal(a.reward, b.reward)
