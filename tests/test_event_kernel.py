"""The compiled event model against the SimPy event model: same traces, same decisions, same numbers.

Every random scenario has one static shape (3 BSs, 4 task slots, 6 slots) and a fixed slot
width, so each (deadline policy, link topology, downloads, rule, policy) compiles once and is
reused across hypothesis examples. Links are slow (3-60 Mbit/s against 2-5 Mbit tasks) so that
shares queue on the wire, overtake one another at the servers and miss deadlines.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parity import Watch, random_decisions

from mecsim.arrivals import Trace
from mecsim.backends import kernel, resolve
from mecsim.backends.kernel import event, event_episode
from mecsim.config import Scenario
from mecsim.engine import Simulation
from mecsim.plugins import make_scheduler
from mecsim.scheduling import Decision
from schedulers.best_single import BestSingleScheduler, best_single_decide
from schedulers.local import LocalScheduler, local_decide
from schedulers.optimal import OptimalScheduler, optimal_decide

B, N, SLOTS = 3, 4, 6
WIDTH = B * N
TOL = 1e-9
# (deadline policy, link topology, result downloads, allocation rule): together every value of each
COMBOS = [
    ("keep", "pair", False, "cwa"),
    ("drop", "pair", False, "waterfill"),
    ("keep", "destination", True, "hecwa"),
    ("drop", "destination", True, "cwa"),
]
EXAMPLES = settings(max_examples=6, deadline=None)


def distinct(capacities) -> bool:
    """Servers of equal speed make exact ties between choices, which float rounding (NumPy on one path,
    XLA on the other) may break either way; the parity checked here is that of tie-free scenarios."""
    values = sorted(capacities)
    return all(hi > lo * 1.01 for lo, hi in zip(values, values[1:]))


@st.composite
def scenarios(draw, combos=COMBOS):
    policy, topology, downloads, rule = draw(st.sampled_from(combos))
    deadline = draw(st.sampled_from([0.3, 1.0, 2.5] + ([None] if policy == "keep" else [])))
    return Scenario(
        model="event",
        n_bs=B,
        tasks_per_slot=N,
        slots=SLOTS,
        capacities=tuple(draw(st.lists(st.floats(2.0, 60.0), min_size=B, max_size=B).filter(distinct))),
        rates=tuple(draw(st.lists(st.floats(3.0, 60.0), min_size=B, max_size=B))),
        arrival_prob=draw(st.sampled_from([0.3, 0.7, 1.0])),
        slot_length=draw(st.sampled_from([0.1, 0.5])),
        deadline=deadline,
        deadline_policy=policy,
        link_topology=topology,
        result_range=(0.5, 3.0) if downloads else None,
        variant={"local_download": draw(st.booleans())} if downloads else {},
        allocation=rule,
        seed=draw(st.integers(0, 10_000)),
    )


@dataclass(frozen=True)
class Seen:
    """A kernel policy that also returns what its task sees, as `Watch` records it."""

    inner: object

    def __call__(self, params, key, state, task, ctx):
        subset, fractions = self.inner(params, key, state, task, ctx)[:2]
        seen = jnp.concatenate([state.backlog, task.current_backlog, task.tx_backlog, task.wait])
        return subset, fractions, seen


def assert_same_episode(batch, i, replica, python, watch=None, ties=False):
    """``ties``: compare the servers given a share, not the subsets chosen. A subset member that gets no
    share makes an exact tie with the subset without it; under faults (a server down keeps growing its
    backlog, so CWA often gives it nothing) such ties are common, and NumPy and XLA round the shares
    differently in the last bit, enough to break them either way."""
    got, want = batch.task_log(i, replica), python.log
    assert len(got) == len(want)
    if ties:
        np.testing.assert_array_equal((got.subset > 0) & (got.fractions > 0), want.fractions > 0)
    else:
        np.testing.assert_array_equal(got.subset, want.subset)
    np.testing.assert_allclose(got.fractions, want.fractions, rtol=0, atol=TOL)
    np.testing.assert_array_equal(got.failed, want.failed)
    np.testing.assert_array_equal(np.isnan(got.latency), np.isnan(want.latency))
    np.testing.assert_allclose(got.latency, want.latency, rtol=0, atol=TOL)
    np.testing.assert_allclose(got.reward, want.reward, rtol=0, atol=TOL)
    metrics = batch.metrics(i, replica, got)
    for key, value in python.metrics.items():
        np.testing.assert_allclose(metrics[key], value, rtol=0, atol=TOL, err_msg=key)
    if watch is not None and watch.seen:
        np.testing.assert_allclose(batch.aux(i), np.stack(watch.seen), rtol=0, atol=TOL)


def check_parity(scenario, make_python, decide, params=None, episodes=(0, 1), ties=False):
    replicas = [kernel.Replica(scenario, e) for e in episodes]
    batch = kernel.run_batch(
        replicas, kernel.JaxPolicy(Seen(decide), params, params is not None), length=WIDTH
    )
    for i, e in enumerate(episodes):
        watch = make_python(scenario, e)
        python = Simulation(scenario, watch).run_episode(e)
        assert_same_episode(batch, i, replicas[i], python, watch, ties)
    return batch


# -- parity per scheduler --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "scheduler, decide",
    [
        (OptimalScheduler, optimal_decide),
        (BestSingleScheduler, best_single_decide),
        (LocalScheduler, local_decide),
    ],
    ids=["optimal", "best-single", "local"],
)
@EXAMPLES
@given(scenario=scenarios())
def test_schedulers_match_python(scheduler, decide, scenario):
    check_parity(scenario, lambda sc, e: Watch(sc, scheduler(sc)), decide)


def replay(scenario, trace, subsets, fractions):
    """(kernel batch, SimPy result) of one episode with the given decisions."""
    params = tuple(kernel.replay_params(scenario, [trace], [rows], WIDTH) for rows in (subsets, fractions))
    replica = kernel.Replica(scenario, 0, trace=trace)
    policy = kernel.JaxPolicy(Seen(kernel.replay_fractions_decide), params, batched_params=True)
    batch = kernel.run_batch([replica], policy, length=WIDTH)
    watch = Watch(scenario, decisions=lambda k: Decision(subsets[k], fractions[k]))
    return batch, replica, Simulation(scenario, watch).run_episode(0, trace), watch


def stressed(**kw) -> Scenario:
    return Scenario(
        **{
            **dict(model="event", n_bs=B, tasks_per_slot=N, slots=SLOTS, capacities=(5.0, 20.0, 40.0)),
            **dict(rates=(4.0, 6.0, 9.0), arrival_prob=1.0, slot_length=0.1, deadline=0.6, seed=11),
            **kw,
        }
    )


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_overtaking_and_drops_are_exercised_and_match(policy):
    """A loaded scenario where later local shares overtake remote ones still on the wire, and (drop)
    shares are lost on links, at the head of a queue and in service."""
    scenario = stressed(deadline_policy=policy)
    trace, subsets, fractions = random_decisions(scenario, 0)
    batch, replica, python, watch = replay(scenario, trace, subsets, fractions)
    assert_same_episode(batch, 0, replica, python, watch)
    log = python.log
    assert log.failed.mean() > 0.3
    if policy == "drop":
        assert np.isnan(log.latency).sum() == log.failed.sum() > 0
    # overtaking: some remote share reached its ES after a local share decided in a later slot
    slot = log.slot
    arrival_at_es = [[] for _ in range(B)]
    for k in range(len(log)):
        for i in np.flatnonzero(log.fractions[k] > 0):
            remote = i != log.bs[k]
            arrival_at_es[i].append((slot[k], remote))
    assert any(
        any(r for s, r in jobs) and any(not r and s > min(s2 for s2, r2 in jobs if r2) for s, r in jobs)
        for jobs in arrival_at_es
    )


def test_hand_computed_overtaking():
    """BS 0's share is sent to ES 1 over a 4 Mbit/s link (1 s on the wire); BS 1's local task of the
    next slot arrives at ES 1 at 0.5 s and is served first."""
    sc = Scenario(
        model="event", n_bs=2, tasks_per_slot=1, slots=3, capacities=(10.0, 10.0), rates=(4.0, 4.0),
        arrival_prob=1.0, slot_length=0.5, deadline=None,
    )  # fmt: skip
    sizes = np.zeros((3, 2, 1))
    sizes[0, 0, 0] = 4.0  # slot 0, BS 0 -> ES 1: on the wire until 1.0
    sizes[1, 1, 0] = 4.0  # slot 1, BS 1 -> ES 1 (local), arrives at 0.5, 0.8 s of work
    trace = Trace(sizes, np.full(sizes.shape, 2.0))
    to_es1 = np.array([[0.0, 1.0], [0.0, 1.0]])
    batch, replica, python, _ = replay(sc, trace, to_es1, to_es1)
    got = batch.task_log(0, replica)
    # local: 0.5 -> 1.3 (latency 0.8); remote: arrives 1.0, waits until 1.3, done 2.1 (latency 2.1)
    np.testing.assert_allclose(got.latency, [2.1, 0.8], rtol=0, atol=1e-12)
    np.testing.assert_allclose(python.log.latency, [2.1, 0.8], rtol=0, atol=1e-12)


@pytest.mark.parametrize("replicas", [3, event.LOOP_UP_TO + 8], ids=["loop", "branch"])
def test_first_steps_skips_only_after_the_busiest_replica(replicas):
    """Each replica's steps after its own count change nothing; those after the largest count are skipped
    (outputs 0), the others run as in a full scan, on both of `first_steps`' ways."""
    length = 7
    counts = jnp.asarray(np.random.default_rng(replicas).integers(0, 5, replicas))
    xs = jnp.arange(1.0, replicas * length + 1).reshape(replicas, length)

    def run(first):
        def replica(x, count):
            def step(carry, kx):
                k, value = kx
                carry = carry + jnp.where(k < count, value, 0.0)
                return carry, (carry, k)

            return first(step, 0.0, (jnp.arange(length), x), count, length)

        return jax.vmap(replica, axis_name=event.REPLICAS)(xs, counts)

    carry, (sums, ks) = run(event.first_steps)
    full_carry, (full_sums, full_ks) = run(lambda step, init, xs, count, n: jax.lax.scan(step, init, xs))
    np.testing.assert_array_equal(carry, full_carry)
    ran = np.arange(length) < int(counts.max())
    np.testing.assert_array_equal(sums[:, ran], full_sums[:, ran])
    np.testing.assert_array_equal(ks[:, ran], full_ks[:, ran])
    assert not np.asarray(sums[:, ~ran]).any() and not np.asarray(ks[:, ~ran]).any()
    assert counts.max() < length  # some steps were skipped


def test_many_replicas_match_groups_and_python():
    """Over `event.LOOP_UP_TO` replicas in one call, the kernel scans and branches past the idle steps; the
    outcomes are those of the same replicas in small groups (which loop) and of the SimPy path."""
    scenario = stressed(deadline_policy="drop", arrival_prob=0.7, rates=(30.0, 40.0, 50.0))
    policy = kernel.JaxPolicy(optimal_decide)
    replicas = [kernel.Replica(scenario, e) for e in range(event.LOOP_UP_TO + 4)]
    together = kernel.run_batch(replicas, policy, length=WIDTH)
    for start in range(0, len(replicas), 12):
        group = replicas[start : start + 12]
        apart = kernel.run_batch(group, policy, length=WIDTH)
        for i, rep in enumerate(group):
            got, want = together.task_log(start + i, rep), apart.task_log(i, rep)
            np.testing.assert_array_equal(got.latency, want.latency)
            np.testing.assert_array_equal(got.fractions, want.fractions)
    for i in (0, len(replicas) - 1):
        python = Simulation(scenario, OptimalScheduler(scenario)).run_episode(replicas[i].episode)
        assert_same_episode(together, i, replicas[i], python)


def test_full_job_tables_are_grown_not_truncated(monkeypatch):
    monkeypatch.setattr(event_episode, "SIZES", (1, 1, 1, 2))
    monkeypatch.setattr(event_episode, "_SIZES", {})
    scenario = stressed(deadline_policy="keep", seed=12)
    trace, subsets, fractions = random_decisions(scenario, 1)
    batch, replica, python, watch = replay(scenario, trace, subsets, fractions)
    assert_same_episode(batch, 0, replica, python, watch)
    ((table, ring, steps, _),) = event_episode._SIZES.values()
    assert table > 1 and ring > WIDTH  # grown from 1, and from the width (16)


# -- learners and engines ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["amcoedge", "drlcoedge"])
def test_dqn_greedy_decisions_match_python(name):
    scenario = stressed(tasks_per_slot=N, arrival_prob=0.5, rates=(30.0, 40.0, 50.0), seed=5)
    scheduler = make_scheduler(name, scenario)
    scheduler.train(False)
    policy = scheduler.jax_policy()
    replicas = [kernel.Replica(scenario, e) for e in (0, 1)]
    batch = kernel.run_batch(replicas, policy, length=WIDTH)
    for i, rep in enumerate(replicas):
        python = Simulation(scenario, scheduler).run_episode(rep.episode)
        assert_same_episode(batch, i, rep, python)


def test_auto_engine_runs_event_scenarios_on_the_kernel():
    scenario = stressed(arrival_prob=0.5)
    scheduler = OptimalScheduler(scenario)
    compiled = resolve("auto", scenario, scheduler, episodes=[0])
    assert compiled.engine == "compiled"
    python = resolve("python", scenario, scheduler).run_episode(0)
    got = compiled.run_episode(0)
    np.testing.assert_allclose(got.log.latency, python.log.latency, rtol=0, atol=TOL)


# -- faults ----------------------------------------------------------------------------------------
@st.composite
def faulty_scenarios(draw):
    """`scenarios` with random outages and slow-downs of servers and links, and a fixed outage window."""
    scenario = draw(scenarios())
    horizon = SLOTS * scenario.slot_length
    processes = [
        {
            "target": target,
            "mean_up": draw(st.sampled_from([0.2, 0.6])) * horizon,
            "mean_down": draw(st.sampled_from([0.1, 0.3])) * horizon,
            "factor": draw(st.sampled_from([0.0, 0.4])),
        }
        for target in ("server", "link")
    ]
    start = draw(st.floats(0.0, 0.8, allow_subnormal=False)) * horizon  # XLA on CPU flushes them to 0
    window = {
        "target": "server",
        "index": draw(st.integers(0, B - 1)),
        "start": start,
        "end": start + horizon / 4,
    }
    faults = {"processes": processes, "windows": [window], "observable": draw(st.booleans())}
    return scenario.replace(faults=faults)


@EXAMPLES
@given(scenario=faulty_scenarios())
def test_optimal_matches_python_under_faults(scenario):
    """Jobs caught by outages, slowed links and downloads, and (observable) infinite terms for servers that
    are down: the same decisions, observations and outcomes on both paths."""
    check_parity(scenario, lambda sc, e: Watch(sc, OptimalScheduler(sc)), optimal_decide, ties=True)


@pytest.mark.parametrize("faults", [False, True], ids=["no-faults", "faults"])
@EXAMPLES
@given(data=st.data(), salt=st.integers(0, 3))
def test_explicit_fractions_match_python(faults, data, salt):
    scenario = data.draw(faulty_scenarios() if faults else scenarios())
    trace, subsets, fractions = random_decisions(scenario, salt)
    batch, replica, python, watch = replay(scenario, trace, subsets, fractions)
    assert_same_episode(batch, 0, replica, python, watch)


def test_hand_computed_outage_in_service():
    """ES 0 (10 Gcycles/s) takes 10 Gcycles at 0 and is down over [0.5, 1.5): done at 2.0. ES 1's local job
    of slot 1 (4 Gcycles at 20 Gcycles/s) runs from 0.5 to 0.7."""
    sc = Scenario(
        model="event", n_bs=2, tasks_per_slot=1, slots=3, capacities=(10.0, 20.0), rates=(40.0, 40.0),
        arrival_prob=1.0, slot_length=0.5, deadline=None,
        faults={"windows": [{"target": "server", "index": 0, "start": 0.5, "end": 1.5}]},
    )  # fmt: skip
    sizes = np.zeros((3, 2, 1))
    sizes[0, 0, 0] = 5.0  # 10 Gcycles at ES 0
    sizes[1, 1, 0] = 2.0  # 4 Gcycles at ES 1
    trace = Trace(sizes, np.full(sizes.shape, 2.0))
    local = np.array([[1.0, 0.0], [0.0, 1.0]])
    batch, replica, python, _ = replay(sc, trace, local, local)
    for log in (batch.task_log(0, replica), python.log):
        np.testing.assert_allclose(log.latency, [2.0, 0.2], rtol=0, atol=1e-12)
    # ES 0 served 5 of its 10 Gcycles within the 1 s horizon (down from 0.5 on)
    np.testing.assert_allclose(batch.served[0], [5.0, 4.0], rtol=0, atol=1e-12)


def test_fault_realisations_are_drawn_further_not_extrapolated(monkeypatch):
    """Drawn to a tenth of the horizon first, the random faults overflow and are drawn further until every
    finish time lies within the drawn realisation."""
    monkeypatch.setattr(event_episode, "SIZES", (16, 32, 64, 0.125))
    monkeypatch.setattr(event_episode, "_SIZES", {})
    processes = [{"target": t, "mean_up": 0.3, "mean_down": 0.1} for t in ("server", "link")]
    scenario = stressed(deadline_policy="keep", deadline=None, faults={"processes": processes})
    trace, subsets, fractions = random_decisions(scenario, 2)
    batch, replica, python, watch = replay(scenario, trace, subsets, fractions)
    assert_same_episode(batch, 0, replica, python, watch)
    ((*_, reach),) = event_episode._SIZES.values()
    assert reach > 1


def test_auto_engine_runs_event_faults_on_the_kernel():
    scenario = stressed(faults={"windows": [{"target": "server", "index": 0, "start": 0.1, "end": 0.3}]})
    assert resolve("auto", scenario, OptimalScheduler(scenario)).engine == "compiled"
    with pytest.raises(ValueError, match="whole episodes in the nested layout"):
        kernel.run_batch([kernel.Replica(stressed(), 0)], kernel.JaxPolicy(local_decide), layout="flat")


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_kernel_training_takes_the_python_paths_steps(policy):
    """AMCoEdge trained on the event kernel takes the SimPy path's steps: the learner's feedback at each slot
    end (outcomes of resolved tasks, estimates of running ones) agrees, so do the curves and the weights."""
    from mecsim.backends.kernel.training import KernelTrainer
    from mecsim.streams import stream

    scenario = stressed(arrival_prob=0.5, rates=(30.0, 40.0, 50.0), deadline_policy=policy, slots=8, seed=4)
    options = dict(learn_start=5, learn_every=2, replace_target_iter=3, memory_size=40, greedy_increment=0.05)
    python = make_scheduler("amcoedge", scenario, rng=stream(scenario.seed, "scheduler"), **options)
    simulation = Simulation(scenario, python)
    metrics = [simulation.run_episode(e).metrics for e in range(4)]
    trainer = KernelTrainer(scenario, "amcoedge", [scenario.seed], options)
    tables = trainer.run(4, timing=False)
    compiled = trainer.write_back()[0]
    assert (compiled.slot_step, compiled.learn_step) == (python.slot_step, python.learn_step)
    assert python.learn_step > 5 and 0 < python.greedy_prob < 1  # learning and exploring
    np.testing.assert_allclose(
        tables[0]["mean_makespan"], [m["mean_makespan"] for m in metrics], rtol=0, atol=TOL
    )
    for got, want in zip(jax.tree.leaves(compiled.state), jax.tree.leaves(python.state)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-9)


def test_kernel_training_reruns_an_overflowing_episode_from_its_start(monkeypatch):
    """Started from tables of one job, training episodes overflow and run again with larger ones, from the
    learner state before the episode (not after the overflowed try): the same curves, state and counters
    as with tables large enough from the start."""
    from mecsim.backends.kernel.training import KernelTrainer

    scenario = stressed(arrival_prob=0.5, rates=(30.0, 40.0, 50.0), slots=8, seed=4)
    options = dict(learn_start=5, learn_every=2, replace_target_iter=3, memory_size=40)

    def trained(sizes):
        monkeypatch.setattr(event_episode, "SIZES", sizes)
        monkeypatch.setattr(event_episode, "_SIZES", {})
        trainer = KernelTrainer(scenario, "amcoedge", [4, 5], options)
        return trainer, trainer.run(3, timing=False)

    roomy, roomy_tables = trained(event_episode.SIZES)
    tight, tight_tables = trained((1, 1, 1, 2))
    ((table, *_),) = event_episode._SIZES.values()
    assert table > 1  # the tight run did overflow and grow
    for got, want in zip(tight_tables, roomy_tables):
        np.testing.assert_array_equal(got["mean_makespan"], want["mean_makespan"])
    assert tight.counters == roomy.counters
    for got, want in zip(jax.tree.leaves(tight.state), jax.tree.leaves(roomy.state)):
        np.testing.assert_array_equal(got, want)


DEDGEAI_SMALL = dict(
    preset="dedgeai", n_bs=4, capacities=(10.0, 20.0, 15.0, 30.0), rates=(400.0, 450.0, 420.0, 480.0),
    tasks_per_slot=6, slots=8, model="event",
)  # fmt: skip


@pytest.mark.parametrize(
    "scenario, name",
    [
        # the DEdgeAI scenario: uniform task counts, result downloads, no deadline (sac-ts and dqn-ts share
        # ddrl-ats's learner code and AMCoEdge's, tested above)
        (DEDGEAI_SMALL, "ddrl-ats"),
        (dict(model="event", slots=4), "ddrl-amsa"),
    ],
)
def test_sac_family_trains_alike_on_both_engines(scenario, name):
    """The SAC / diffusion learners on the event model: the same decisions and outcomes on both engines."""
    from mecsim.training import train

    sc = Scenario(**scenario)
    options = {"learn_start": 10, "batch_size": 8}
    py = train(sc, name, 3, eval_episodes=0, engine="python", options=options, progress=False)
    jx = train(sc, name, 3, eval_episodes=0, engine="compiled", options=options, progress=False)
    assert (jx.episodes.engine_used == "compiled").all()
    np.testing.assert_allclose(py.episodes.mean_makespan.values, jx.episodes.mean_makespan.values, rtol=1e-12)
    assert py.scheduler.learn_step == jx.scheduler.learn_step > 0
