"""Scheduler plugins: lookup by name or import path, validation of their outputs, the built-in heuristics."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from mecsim.allocation import subset_masks
from mecsim.arrivals import Trace
from mecsim.config import Scenario
from mecsim.engine import Simulation
from mecsim.models import slotted
from mecsim.plugins import available_schedulers, make_scheduler, resolve_scheduler
from mecsim.scheduling import (
    Decision,
    Observation,
    Scheduler,
    SchedulerError,
    check_slot_decision,
    normalise_decision,
)

BUILTIN = ["local", "random", "optimal", "best-single"]


def tiny(**kw) -> Scenario:
    base = dict(
        n_bs=3,
        capacities=(10.0, 20.0, 30.0),
        rates=(400.0, 500.0, 400.0),
        tasks_per_slot=4,
        slots=3,
        arrival_prob=0.8,
    )
    base.update(kw)
    return Scenario(**base)


def make_obs(scenario, st, b, size=4.0, density=0.2) -> Observation:
    """An observation of a hand-made state, evaluated with the slotted model's own rules."""
    p = slotted.SlottedParams.from_scenario(scenario)
    wait, duration, split = slotted.delay_terms(st, b, size, density, p)
    remote = np.arange(scenario.n_bs) != b
    return Observation(
        time=0.0,
        slot=0,
        bs=b,
        task=0,
        size=size,
        density=density,
        backlog=st.backlog,
        current_backlog=st.backlog + st.assigned,
        tx_backlog=remote * st.tau[b],
        wait=wait,
        duration=duration,
        split_duration=split,
        scenario=scenario,
        _evaluator=lambda obs, masks, rule: slotted.evaluate_subsets(
            obs.wait, obs.duration, obs.split_duration, masks, rule, p
        ),
    )


def state(backlog, assigned=None, tau=None):
    n = len(backlog)
    return slotted.SlotState(
        np.array(backlog, float),
        np.zeros(n) if assigned is None else np.array(assigned, float),
        np.zeros(n) if tau is None else np.array(tau, float),
    )


# -- lookup -----------------------------------------------------------------------------------------
def test_builtin_names_are_registered():
    assert set(BUILTIN) <= set(available_schedulers())


@pytest.mark.parametrize("name", BUILTIN)
def test_resolve_and_build_registered(name):
    cls = resolve_scheduler(name)
    assert isinstance(cls, type)
    sched = make_scheduler(name, tiny())
    assert isinstance(sched, cls)
    assert sched.name == name
    result = Simulation(tiny(), sched).run_episode(0)
    assert result.log.decided.all()


def test_import_path_plugin_from_a_user_file(tmp_path, monkeypatch):
    (tmp_path / "my_mec_plugin_mod.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from mecsim.scheduling import Scheduler

            class Last(Scheduler):
                def decide(self, obs):
                    x = np.zeros(obs.n_servers)
                    x[-1] = 1.0
                    return x
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "my_mec_plugin_mod:Last"
    cls = resolve_scheduler(name)
    assert cls.__name__ == "Last"
    sched = make_scheduler(name, tiny())
    assert sched.name == name
    log = Simulation(tiny(), sched).run_episode(0).log
    assert len(log) > 0
    assert np.all(log.subset == [False, False, True])
    np.testing.assert_array_equal(log.fractions, np.tile([0.0, 0.0, 1.0], (len(log), 1)))


def test_import_path_errors(tmp_path, monkeypatch):
    (tmp_path / "my_mec_plugin_empty.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SchedulerError, match="no attribute 'Missing'"):
        resolve_scheduler("my_mec_plugin_empty:Missing")
    with pytest.raises(SchedulerError, match="cannot import module 'no_such_mec_module_zz'"):
        resolve_scheduler("no_such_mec_module_zz:Thing")


def test_import_path_without_decide_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "my_mec_plugin_nodecide.py").write_text(
        "class NoDecide:\n    def __init__(self, scenario, rng=None):\n        pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SchedulerError, match="decide"):
        make_scheduler("my_mec_plugin_nodecide:NoDecide", tiny())


def test_unknown_name_lists_known_names():
    with pytest.raises(SchedulerError) as info:
        resolve_scheduler("no-such-scheduler")
    msg = str(info.value)
    assert "no-such-scheduler" in msg
    for name in BUILTIN:
        assert name in msg
    assert "package.module:ClassName" in msg


def test_unknown_options_are_rejected():
    with pytest.raises(SchedulerError, match="unknown options"):
        make_scheduler("local", tiny(), learning_rate=0.1)


# -- validation of plugin outputs -------------------------------------------------------------------
class Fixed(Scheduler):
    """Returns one fixed value for every task."""

    name = "bad-plugin"

    def __init__(self, scenario, value):
        super().__init__(scenario)
        self.value = value

    def decide(self, obs):
        return self.value


class FixedSlot(Scheduler):
    """Returns the output of ``make(n_tasks)`` for every slot."""

    name = "bad-batch-plugin"

    def __init__(self, scenario, make):
        super().__init__(scenario)
        self.make = make

    def decide(self, obs):  # pragma: no cover
        raise AssertionError

    def decide_slot(self, obs):
        return self.make(len(obs))


def _run(scheduler, scenario):
    return Simulation(scenario, scheduler).run_episode(0)


BAD_DECISIONS = [
    ("wrong length", [0.5, 0.5], r"\(2,\).*need \(3,\)"),
    ("too long", [0.25, 0.25, 0.25, 0.25], r"\(4,\)"),
    ("nan", [np.nan, 0.5, 0.5], r"non-finite.*nan"),
    ("inf", [np.inf, 0.0, 0.0], r"non-finite.*inf"),
    ("negative", [-0.5, 1.0, 0.5], r"negative.*-0\.5"),
    ("sum below one", [0.5, 0.3, 0.1], r"\[0\.5, 0\.3, 0\.1\].*summing to 0\.9"),
    ("sum above one", [0.5, 0.5, 0.5], r"summing to 1\.5"),
    ("all zero", [0.0, 0.0, 0.0], r"summing to 0"),
    ("not numeric", "abc", r"abc"),
    (
        "outside subset",
        Decision(np.array([1.0, 0.0, 0.0]), np.array([0.5, 0.5, 0.0])),
        r"\[0\.5, 0\.5, 0\.0\] outside its subset \[1\.0, 0\.0, 0\.0\]",
    ),
    ("empty subset", Decision(np.zeros(3), None), r"subset \[0\.0, 0\.0, 0\.0\]"),
    ("non 0/1 subset", Decision(np.array([0.5, 1.0, 0.0]), None), r"subset \[0\.5, 1\.0, 0\.0\]"),
    ("subset wrong length", Decision(np.ones(2), None), r"subset \[1.0, 1.0\] of shape \(2,\)"),
]


@pytest.mark.parametrize(
    "value,pattern", [(v, p) for _, v, p in BAD_DECISIONS], ids=[c[0] for c in BAD_DECISIONS]
)
def test_engine_rejects_invalid_decisions(value, pattern):
    with pytest.raises(SchedulerError, match=pattern) as info:
        _run(Fixed(tiny(), value), tiny())
    assert "'bad-plugin'" in str(info.value)


def test_name_in_error_is_the_name_the_user_gave(tmp_path, monkeypatch):
    (tmp_path / "my_mec_plugin_bad.py").write_text(
        "from mecsim.scheduling import Scheduler\n"
        "class Bad(Scheduler):\n"
        "    def decide(self, obs):\n"
        "        return [0.7, 0.7, 0.7]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sched = make_scheduler("my_mec_plugin_bad:Bad", tiny())
    with pytest.raises(SchedulerError, match=r"'my_mec_plugin_bad:Bad'.*summing to 2\.1"):
        _run(sched, tiny())


def test_fractions_within_tolerance_are_accepted():
    d = normalise_decision([0.5, 0.5 + 1e-9, 0.0], 3, "x")
    np.testing.assert_array_equal(d.subset, [1.0, 1.0, 0.0])
    with pytest.raises(SchedulerError):
        normalise_decision([0.5, 0.5 + 1e-4, 0.0], 3, "x")


def test_zero_fraction_member_inside_subset_is_allowed():
    d = normalise_decision(Decision(np.array([1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])), 3, "x")
    np.testing.assert_array_equal(d.subset, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(d.fractions, [1.0, 0.0, 0.0])


def _eye_rows(n_tasks, n=3):
    return np.eye(n)[np.zeros(n_tasks, dtype=int)]


BAD_BATCHES = [
    (
        "one row short",
        lambda k: Decision(_eye_rows(k)[:-1], _eye_rows(k)[:-1]),
        r"subsets of shape \(\d+, 3\).*need \(\d+, 3\)",
    ),
    ("wrong server count", lambda k: Decision(np.ones((k, 2)), None), r"shape \(\d+, 2\)"),
    ("flat vector", lambda k: Decision(np.ones(3), None), r"shape \(3,\)"),
    (
        "fractions shape",
        lambda k: Decision(_eye_rows(k), _eye_rows(k)[:, :2]),
        r"fractions of shape \(\d+, 2\)",
    ),
    (
        "empty subset row",
        lambda k: Decision(np.vstack([_eye_rows(k)[:-1], np.zeros((1, 3))]), None),
        r"subset of task \d+ is \[0\.0, 0\.0, 0\.0\]",
    ),
    (
        "nan fraction",
        lambda k: Decision(np.ones((k, 3)), np.full((k, 3), np.nan)),
        r"task 0 are \[nan, nan, nan\]",
    ),
    (
        "bad sum",
        lambda k: Decision(np.ones((k, 3)), np.full((k, 3), 0.5)),
        r"task 0 are \[0\.5, 0\.5, 0\.5\]",
    ),
    (
        "outside subset",
        lambda k: Decision(_eye_rows(k), np.full((k, 3), 1 / 3)),
        r"task 0 .*for subset \[1\.0, 0\.0, 0\.0\]",
    ),
    (
        "negative",
        lambda k: Decision(np.ones((k, 3)), np.tile([-0.5, 1.0, 0.5], (k, 1))),
        r"\[-0\.5, 1\.0, 0\.5\]",
    ),
]


@pytest.mark.parametrize("make,pattern", [(m, p) for _, m, p in BAD_BATCHES], ids=[c[0] for c in BAD_BATCHES])
def test_engine_rejects_invalid_slot_batches(make, pattern):
    sc = tiny(arrival_prob=1.0)
    with pytest.raises(SchedulerError, match=pattern) as info:
        _run(FixedSlot(sc, make), sc)
    assert "'bad-batch-plugin'" in str(info.value)


def test_plain_array_batch_is_accepted():
    sc = tiny(arrival_prob=1.0)
    log = _run(FixedSlot(sc, lambda k: np.tile([0.0, 0.0, 1.0], (k, 1))), sc).log
    assert np.all(log.subset[:, 2]) and not np.any(log.subset[:, :2])


def test_check_slot_decision_reports_first_bad_row():
    subsets = np.ones((3, 2))
    fractions = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.9]])
    with pytest.raises(SchedulerError, match=r"task 2 are \[0\.9, 0\.9\]"):
        check_slot_decision(Decision(subsets, fractions), 3, 2, "s")


# -- built-in heuristics ----------------------------------------------------------------------------
def _brute_force(obs, scenario):
    """Minimum over every subset, one at a time, strict < so ties stay with the lowest index."""
    p = slotted.SlottedParams.from_scenario(scenario)
    best, best_span, best_x = None, np.inf, None
    for k, mask in enumerate(subset_masks(scenario.n_bs)):
        x, span = slotted.evaluate_subsets(
            obs.wait, obs.duration, obs.split_duration, mask[None], scenario.allocation, p
        )
        if span[0] < best_span - 1e-12:
            best, best_span, best_x = k, span[0], x[0]
    return best, best_span, best_x


HAND_STATES = [
    (state([0.0, 0.0, 0.0]), 0),
    (state([5.0, 0.0, 0.0]), 0),
    (state([0.0, 8.0, 0.5], assigned=[0.3, 0.0, 0.0], tau=[0.0, 0.02, 0.0]), 1),
    (state([2.0, 2.0, 9.0], tau=[0.05, 0.0, 0.0]), 2),
    (state([0.0, 30.0, 30.0]), 0),  # the other servers only hurt: local alone wins
]


@pytest.mark.parametrize("preset", ["amcoedge", "drlcoedge", "randcoedge"])
@pytest.mark.parametrize("allocation", ["cwa", "hecwa", "waterfill"])
@pytest.mark.parametrize("case", range(len(HAND_STATES)))
def test_optimal_matches_brute_force(preset, allocation, case):
    sc = tiny(preset=preset, allocation=allocation)
    st, b = HAND_STATES[case]
    obs = make_obs(sc, st, b)
    decision = make_scheduler("optimal", sc).decide(obs)
    k, span, x = _brute_force(obs, sc)
    np.testing.assert_array_equal(decision.subset, subset_masks(3)[k])
    np.testing.assert_allclose(decision.fractions, x, rtol=1e-12, atol=1e-15)
    # the decision executes to the predicted make-span
    p = slotted.SlottedParams.from_scenario(sc)
    _, realised, _, _ = slotted.apply_task(st, b, 4.0, 0.2, decision.subset, decision.fractions, p)
    assert realised == pytest.approx(span, rel=1e-12)


def test_optimal_hand_case_local_only():
    sc = tiny()
    obs = make_obs(sc, state([0.0, 30.0, 30.0]), 0)
    decision = make_scheduler("optimal", sc).decide(obs)
    np.testing.assert_array_equal(decision.subset, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(decision.fractions, [1.0, 0.0, 0.0])


def test_optimal_ties_go_to_the_lowest_enumeration_index():
    sc = tiny()
    spans = np.array([3.0, 2.0, 2.5, 1.0, 1.5, 1.0, 1.0])  # subsets 3, 5 and 6 tie at the minimum
    fractions = subset_masks(3) / subset_masks(3).sum(axis=1, keepdims=True)
    obs = make_obs(sc, state([0.0, 0.0, 0.0]), 0)
    obs = Observation(
        **{
            **{f: getattr(obs, f) for f in Observation.__dataclass_fields__},
            "_evaluator": lambda o, masks, rule: (fractions, spans),
        }
    )
    decision = make_scheduler("optimal", sc).decide(obs)
    np.testing.assert_array_equal(decision.subset, [1.0, 1.0, 0.0])


def test_optimal_through_the_engine_is_never_beaten_by_any_subset():
    sc = tiny(arrival_prob=1.0, slot_length=0.05)

    class Checked(Scheduler):
        name = "checked-optimal"

        def __init__(self, scenario):
            super().__init__(scenario)
            self.inner = make_scheduler("optimal", scenario)
            self.checked = 0

        def decide(self, obs):
            d = self.inner.decide(obs)
            _, spans = obs.evaluate()
            chosen = int(np.flatnonzero((subset_masks(3) == d.subset).all(axis=1))[0])
            assert spans[chosen] <= spans.min() + 1e-12
            assert np.all(spans[:chosen] > spans[chosen])  # no earlier subset ties
            self.checked += 1
            return d

    sched = Checked(sc)
    log = Simulation(sc, sched).run_episode(0).log
    assert sched.checked == len(log) > 0


@pytest.mark.parametrize(
    "backlog,b,expected",
    [
        # task d=4, rho=0.2 at BS0: ES0 0.08, ES1 4/500 + 0.8/20 = 0.048, ES2 4/400 + 0.8/30 = 0.0367
        ([0.0, 0.0, 0.0], 0, 2),
        ([0.0, 0.0, 3.0], 0, 1),  # ES2 waits 0.1
        ([0.0, 3.0, 3.0], 0, 0),  # ES1 waits 0.15, ES2 0.1 -> local 0.08 wins
        ([0.0, 0.0, 0.0], 2, 2),  # at BS2: ES2 0.0267 is local
    ],
)
def test_best_single_picks_the_best_singleton(backlog, b, expected):
    sc = tiny()
    obs = make_obs(sc, state(backlog), b)
    decision = make_scheduler("best-single", sc).decide(obs)
    onehot = np.eye(3)[expected]
    np.testing.assert_array_equal(decision.subset, onehot)
    np.testing.assert_array_equal(decision.fractions, onehot)
    _, spans = obs.evaluate(np.eye(3))
    assert spans[expected] == spans.min()


def test_random_picks_local_plus_one_and_is_seeded():
    sc = tiny(arrival_prob=1.0, slots=6)

    def run(seed):
        return (
            Simulation(sc, make_scheduler("random", sc, rng=np.random.default_rng(seed))).run_episode(0).log
        )

    a, b, c = run(11), run(11), run(12)
    assert np.all(a.subset[np.arange(len(a)), a.bs])  # the arrival BS always takes part
    sizes = a.subset.sum(axis=1)
    assert set(np.unique(sizes)) == {1, 2}  # local only (draw == b) or local + one
    # every collaborator is drawn at some point
    for server in range(3):
        assert np.any(a.subset[a.bs != server, server])
    np.testing.assert_array_equal(a.subset, b.subset)
    np.testing.assert_array_equal(a.latency, b.latency)
    assert not np.array_equal(a.subset, c.subset)


def test_random_per_task_path_also_picks_local_plus_one():
    sc = tiny()
    sched = make_scheduler("random", sc, rng=np.random.default_rng(3))
    for b in (0, 1, 2):
        for _ in range(10):
            d = normalise_decision(sched.decide(make_obs(sc, state([0.0, 0.0, 0.0]), b)), 3, "random")
            assert d.subset[b] == 1.0
            assert 1 <= d.subset.sum() <= 2
            assert d.fractions is None  # the allocation rule decides at execution


def test_local_always_picks_the_arrival_bs():
    sc = tiny(arrival_prob=1.0)
    log = Simulation(sc, make_scheduler("local", sc)).run_episode(0).log
    np.testing.assert_array_equal(log.subset, np.eye(3, dtype=bool)[log.bs])
    np.testing.assert_array_equal(log.fractions, np.eye(3)[log.bs])
    sched = make_scheduler("local", sc)
    for b in range(3):
        d = sched.decide(make_obs(sc, state([9.0, 9.0, 9.0]), b))
        np.testing.assert_array_equal(d.subset, np.eye(3)[b])


def test_local_hand_trace_latencies():
    sc = tiny(tasks_per_slot=2)
    sizes = np.zeros((3, 3, 2))
    sizes[0, 1, :] = [4.0, 2.0]  # BS1: 0.8 then 0.4 Gcycles on ES1 (f = 20)
    trace = Trace(sizes, np.full(sizes.shape, 0.2))
    log = Simulation(sc, make_scheduler("local", sc)).run_episode(0, trace=trace).log
    np.testing.assert_allclose(log.latency, [0.04, 0.04 + 0.02])
