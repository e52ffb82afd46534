"""The compiled slot kernel against the Python slotted model: same traces, same decisions, same numbers.

Every random scenario here has the same static shape (3 BSs, 4 task slots, 4 decision
slots) and the kernels a fixed scan length, so each (flags, allocation rule, policy) is
compiled once and reused across hypothesis examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from parity import Watch, random_decisions

from mecsim.arrivals import episode_trace
from mecsim.backends import kernel, resolve
from mecsim.config import Scenario
from mecsim.engine import Simulation
from mecsim.models.slotted_model import SlottedModel
from mecsim.plugins import make_scheduler
from mecsim.runner import run
from mecsim.scheduling import Decision, SchedulerError
from mecsim.tasklog import TaskLog, episode_metrics
from schedulers.best_single import BestSingleScheduler, best_single_decide
from schedulers.local import LocalScheduler, local_decide
from schedulers.optimal import OptimalScheduler, optimal_decide
from schedulers.random_coedge import RandomScheduler, random_decide

B, N, SLOTS = 3, 4, 5
FLAT = (SLOTS - 1) * B * N  # flat scan length that fits any trace of this shape
WIDTH = B * N  # nested width that fits any slot
TOL = 1e-9
# Static combinations (preset flags, allocation rule, extra flags) that together cover every flag value
# and rule; a fixed list keeps the number of compiled kernels small while hypothesis varies the numbers.
COMBOS = [
    ("amcoedge", "cwa", {}),
    ("randcoedge", "hecwa", {}),
    ("drlcoedge", "waterfill", {}),
    ("optimal", "cwa", {"tau_clamp": "always"}),
    ("drlcoedge", "cwa", {"enqueue_failed_work": False}),
    (
        "amcoedge",
        "waterfill",
        {"makespan_counts_idle": False, "tau_clamp": "always", "enqueue_failed_work": False},
    ),
]
EXAMPLES = settings(max_examples=15, deadline=None)


def small(**kw) -> Scenario:
    base = dict(
        n_bs=B, tasks_per_slot=N, slots=SLOTS, capacities=(10.0, 20.0, 30.0), rates=(400.0, 450.0, 500.0)
    )
    return Scenario(**{**base, **kw})


@st.composite
def scenarios(draw, combos=COMBOS):
    preset, rule, variant = draw(st.sampled_from(combos))
    return Scenario(
        n_bs=B,
        tasks_per_slot=N,
        slots=SLOTS,
        capacities=tuple(draw(st.lists(st.floats(2.0, 60.0), min_size=B, max_size=B))),
        rates=tuple(draw(st.lists(st.floats(20.0, 600.0), min_size=B, max_size=B))),
        arrival_prob=draw(st.sampled_from([0.0, 0.3, 0.7, 1.0])),
        slot_length=draw(st.sampled_from([0.1, 0.5, 1.0])),
        deadline=draw(st.sampled_from([0.05, 0.3, 1.0])),
        preset=preset,
        allocation=rule,
        variant=variant,
        seed=draw(st.integers(0, 10_000)),
    )


# -- both paths, instrumented ----------------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    """A kernel policy that also returns the queue state its task sees, as `Watch` records it."""

    inner: Callable

    def __call__(self, params, key, state, task, ctx):
        subset, fractions = self.inner(params, key, state, task, ctx)[:2]
        remote = 1.0 - jax.nn.one_hot(task.bs, ctx.n_bs, dtype=task.wait.dtype)
        seen = jnp.concatenate(
            [state.backlog, state.backlog + state.assigned, remote * state.tau[task.bs], task.wait]
        )
        return subset, fractions, seen


def python_episode(scenario, scheduler, episode=0):
    """(log, metrics, final backlog) of one episode on the Python path."""
    trace = episode_trace(scenario, scenario.seed, episode)
    log = TaskLog(scenario, trace, episode)
    model = SlottedModel(scenario, scheduler)
    env = simpy.Environment()
    env.process(model.process(env, trace, log))
    env.run()
    horizon = scenario.decision_slots * scenario.slot_length
    metrics = episode_metrics(log, model.served, np.asarray(scenario.capacities, float), horizon)
    return log, metrics, model.state.backlog


def kernel_batch(replicas, decide, params=None, batched=False, layout="flat", granularity="episode"):
    length = FLAT if layout == "flat" else WIDTH
    policy = kernel.JaxPolicy(decide, params, batched)
    return kernel.run_batch(replicas, policy, layout=layout, granularity=granularity, length=length)


def assert_logs_match(got: TaskLog, want: TaskLog):
    assert len(got) == len(want)
    np.testing.assert_array_equal(got.slot, want.slot)
    np.testing.assert_array_equal(got.bs, want.bs)
    np.testing.assert_array_equal(got.task, want.task)
    np.testing.assert_array_equal(got.subset, want.subset)
    np.testing.assert_array_equal(got.failed, want.failed)
    np.testing.assert_allclose(got.latency, want.latency, rtol=0, atol=TOL)
    np.testing.assert_allclose(got.makespan, want.makespan, rtol=0, atol=TOL)
    np.testing.assert_allclose(got.reward, want.reward, rtol=0, atol=TOL)
    np.testing.assert_allclose(got.fractions, want.fractions, rtol=0, atol=TOL)


def assert_metrics_match(got: dict, want: dict):
    assert got.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=0, atol=TOL, err_msg=key)


def check_parity(scenario, make_python, decide, params_of=None, episodes=(0, 1), layout="flat"):
    """Python episodes (``make_python(scenario, episode) -> scheduler``) against one vmapped kernel call."""
    replicas = [kernel.Replica(scenario, e) for e in episodes]
    runs = []
    for e in episodes:
        watch = make_python(scenario, e)
        runs.append((watch, *python_episode(scenario, watch, e)))
    params = params_of(replicas, [r[1] for r in runs]) if params_of else None
    batch = kernel_batch(replicas, Seen(decide), params, batched=params is not None, layout=layout)
    for i, (watch, log, metrics, backlog) in enumerate(runs):
        got = batch.task_log(i, replicas[i])
        assert_logs_match(got, log)
        assert_metrics_match(batch.metrics(i, replicas[i], got), metrics)
        np.testing.assert_allclose(batch.backlog[i], backlog, rtol=0, atol=TOL)
        seen = batch.aux(i)
        if len(watch.seen):
            np.testing.assert_allclose(seen, np.stack(watch.seen), rtol=0, atol=TOL)
    return batch


def replayed(subsets_of, fractions_of=None):
    """Python side of a replay: per-task decisions taken from a reference log."""

    def make(scenario, episode):
        subsets = subsets_of(episode).astype(float)
        fractions = None if fractions_of is None else fractions_of(episode)
        return Watch(
            scenario, decisions=lambda k: Decision(subsets[k], None if fractions is None else fractions[k])
        )

    return make


# -- parity per scheduler --------------------------------------------------------------------------
@EXAMPLES
@given(scenarios())
def test_optimal_matches_python(scenario):
    check_parity(scenario, lambda sc, e: Watch(sc, OptimalScheduler(sc)), optimal_decide)


@EXAMPLES
@given(scenarios())
def test_best_single_matches_python(scenario):
    check_parity(scenario, lambda sc, e: Watch(sc, BestSingleScheduler(sc)), best_single_decide)


@EXAMPLES
@given(scenarios())
def test_local_matches_python(scenario):
    batch = check_parity(scenario, lambda sc, e: Watch(sc, LocalScheduler(sc)), local_decide)
    # and the Python path's batched slot form (decide_slot + apply_slot) gives the same episode
    log, metrics, _ = python_episode(scenario, LocalScheduler(scenario))
    assert_logs_match(batch.task_log(0, kernel.Replica(scenario, 0)), log)


@EXAMPLES
@given(scenarios())
def test_random_decisions_replayed_match_python(scenario):
    """RandCoEdge's own decisions (batched, allocated on the true state) fed to the kernel."""
    subsets = python_episode(scenario, RandomScheduler(scenario))[0].subset

    def params_of(replicas, logs):
        return kernel.replay_params(scenario, [r.get_trace() for r in replicas], [subsets], WIDTH)

    check_parity(scenario, replayed(lambda e: subsets), kernel.replay_decide, params_of, episodes=(0,))


@EXAMPLES
@given(scenarios(), st.integers(0, 3))
def test_explicit_fractions_replayed_match_python(scenario, salt):
    """Arbitrary subsets with explicit fractions (zero shares included) give the same episode."""
    _, subsets, fractions = random_decisions(scenario, salt)

    def params_of(replicas, logs):
        traces = [r.get_trace() for r in replicas]
        return (
            kernel.replay_params(scenario, traces, [subsets], WIDTH),
            kernel.replay_params(scenario, traces, [fractions], WIDTH),
        )

    check_parity(
        scenario,
        replayed(lambda e: subsets, lambda e: fractions),
        kernel.replay_fractions_decide,
        params_of,
        episodes=(0,),
    )


# -- layouts, granularity, replicas ----------------------------------------------------------------
@settings(max_examples=5, deadline=None)
@given(scenarios(COMBOS[:1]))
def test_layouts_and_slot_stepping_agree(scenario):
    replicas = [kernel.Replica(scenario, e) for e in range(3)]
    flat = kernel_batch(replicas, optimal_decide)
    nested = kernel_batch(replicas, optimal_decide, layout="nested")
    stepped = kernel_batch(replicas, optimal_decide, layout="nested", granularity="slot")
    for other in (nested, stepped):
        np.testing.assert_allclose(other.served, flat.served, rtol=0, atol=TOL)
        np.testing.assert_allclose(other.backlog, flat.backlog, rtol=0, atol=TOL)
        for i, rep in enumerate(replicas):
            assert_logs_match(other.task_log(i, rep), flat.task_log(i, rep))


@settings(max_examples=6, deadline=None)
@given(st.lists(scenarios(COMBOS[:1]), min_size=3, max_size=3))
def test_replicas_of_different_configs_in_one_call(scenarios_):
    """Scenarios that share the static shape but differ in capacities, rates, Δ, deadline, p run side by side."""
    replicas = [kernel.Replica(sc, i) for i, sc in enumerate(scenarios_)]
    together = kernel_batch(replicas, optimal_decide)
    for i, rep in enumerate(replicas):
        alone = kernel_batch([kernel.Replica(rep.scenario, rep.episode)], optimal_decide)
        assert_logs_match(together.task_log(i, rep), alone.task_log(0, rep))
        log, metrics, _ = python_episode(rep.scenario, OptimalScheduler(rep.scenario), rep.episode)
        assert_logs_match(together.task_log(i, rep), log)


def test_reference_point_full_size():
    """The published default point (5 BSs, 50 task slots, 60 decision slots), greedy optimal, two episodes."""
    scenario = Scenario(preset="optimal")
    replicas = [kernel.Replica(scenario, e) for e in (0, 1)]
    batch = kernel.run_batch(replicas, kernel.JaxPolicy(optimal_decide))
    for i, rep in enumerate(replicas):
        log, metrics, backlog = python_episode(scenario, OptimalScheduler(scenario), rep.episode)
        got = batch.task_log(i, rep)
        assert_logs_match(got, log)
        assert_metrics_match(batch.metrics(i, rep, got), metrics)
        np.testing.assert_allclose(batch.backlog[i], backlog, rtol=0, atol=TOL)


def test_random_policy_on_the_kernel():
    """The kernel's own RandCoEdge draws: local server always in, at most one collaborator, reproducible."""
    scenario = small(arrival_prob=1.0, seed=3)
    replicas = [kernel.Replica(scenario, e) for e in (0, 1)]
    a = kernel_batch(replicas, random_decide)
    b = kernel_batch(replicas, random_decide)
    log = a.task_log(0, replicas[0])
    assert log.subset[np.arange(len(log)), log.bs].all()
    assert (log.subset.sum(axis=1) <= 2).all()
    assert log.subset.sum(axis=1).max() == 2 and log.subset.sum(axis=1).min() == 1
    np.testing.assert_allclose(log.fractions.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(log.subset, b.task_log(0, replicas[0]).subset)
    assert not np.array_equal(log.subset, a.task_log(1, replicas[1]).subset)


# -- the engine side -------------------------------------------------------------------------------
def test_runner_engines_agree_and_auto_picks_the_kernel(monkeypatch):
    scenario = small(arrival_prob=0.7, preset="optimal", seed=5)
    python, _ = run(scenario, "optimal", 3, engine="python", timing=False, progress=False, keep_tasks=False)
    compiled, tasks = run(
        scenario, "optimal", 3, engine="compiled", timing=False, progress=False, keep_tasks=True
    )
    assert list(compiled.columns) == list(python.columns)
    for column in python.columns:
        if pd.api.types.is_float_dtype(python[column]) or column == "utilisation":
            got, want = np.stack(compiled[column].to_numpy()), np.stack(python[column].to_numpy())
            np.testing.assert_allclose(
                got.astype(float), want.astype(float), rtol=0, atol=TOL, err_msg=column
            )
        elif column != "engine_used":
            assert compiled[column].astype(str).tolist() == python[column].astype(str).tolist(), column
    assert set(compiled["engine_used"]) == {"compiled"} and set(python["engine_used"]) == {"python"}
    assert len(tasks) == compiled["n_tasks"].sum()
    calls = []
    real = kernel.CompiledSimulation.run_episodes
    monkeypatch.setattr(
        kernel.CompiledSimulation,
        "run_episodes",
        lambda self, *a, **k: calls.append(a) or real(self, *a, **k),
    )
    run(scenario, "local", 3, timing=False, progress=False)
    assert calls and list(calls[0][0]) == [0, 1, 2]  # auto: the kernel, all three episodes in one call


def test_compiled_engine_refuses_what_it_cannot_run():
    plain = small()
    with pytest.raises(SchedulerError, match="no JAX-native form"):  # the rich observation is Python-only
        run(
            plain, "amcoedge", 1, engine="compiled", progress=False, scheduler_options={"observation": "rich"}
        )
    with pytest.raises(SchedulerError, match="engine 'fast'"):
        run(plain, "local", 1, engine="fast", progress=False)
    rich = make_scheduler("amcoedge", plain, observation="rich")
    assert isinstance(resolve("auto", plain, rich), Simulation)


def test_compiled_simulation_calls_episode_hooks_in_order():
    scenario = small(arrival_prob=0.5)

    class Counting(LocalScheduler):
        def __init__(self, sc):
            super().__init__(sc)
            self.ended = []

        def on_episode_end(self, episode, metrics):
            self.ended.append((episode, metrics["n_tasks"]))

    sched = Counting(scenario)
    sim = kernel.CompiledSimulation(scenario, sched, episodes=range(4), group=3)
    results = [sim.run_episode(e) for e in range(4)]
    assert [e for e, _ in sched.ended] == [0, 1, 2, 3]
    assert [r.metrics["n_tasks"] for r in results] == [n for _, n in sched.ended]


# -- learners ----------------------------------------------------------------------------------------
LEARNERS = [("amcoedge", {}), ("drlcoedge", {}), ("smcoedge", {"k": 2}), ("smcoedge-topk", {"k": 2})]
QUIET = dict(greedy_start=1.0, greedy_max=1.0)  # never explore


def learner_scenario(**kw):
    return small(tasks_per_slot=6, slots=8, arrival_prob=0.5, seed=4, **kw)


@pytest.mark.parametrize("name, options", LEARNERS)
def test_dqn_greedy_decisions_match_python(name, options):
    scenario = learner_scenario()
    sched = make_scheduler(name, scenario, **options)
    sched.train(False)
    policy = sched.jax_policy()
    replicas = [kernel.Replica(scenario, e) for e in (0, 1)]
    batch = kernel.run_batch(replicas, policy)
    for i, rep in enumerate(replicas):
        log, metrics, backlog = python_episode(scenario, sched, rep.episode)
        assert_logs_match(batch.task_log(i, rep), log)
        np.testing.assert_allclose(batch.backlog[i], backlog, rtol=0, atol=TOL)
    sched.train(True)
    assert sched.jax_policy() is None  # learning needs the Python hooks (or the kernel trainer)


def test_equal_policies_of_different_schedulers_share_one_compiled_kernel():
    """A bound method compares its owner by identity; the kernel compares a policy's methods by their
    owner's value, so the schedulers of different seeds (a sweep's cells) reuse one compiled kernel, each
    with its own networks (params are arguments, not constants of the kernel)."""
    from mecsim.backends.kernel import scan
    from schedulers.dqn import DQNPolicy

    scenario = learner_scenario()
    schedulers = [make_scheduler("amcoedge", scenario.replace(seed=s)) for s in (4, 5)]
    for sched in schedulers:
        sched.train(False)
    first, second = (scan.static_policy(s.jax_policy()) for s in schedulers)
    assert first == second and hash(first) == hash(second)
    exploring = DQNPolicy(schedulers[1].dqn, explore=True)
    assert scan.static_policy(kernel.JaxPolicy(exploring.decide, prepare=exploring.prepare)) != second

    class Unhashable:
        __hash__ = None

        def decide(self, *args):
            raise AssertionError("not called")

    owner = Unhashable()
    assert scan.static_policy(kernel.JaxPolicy(owner.decide)).decide == owner.decide  # kept as it is

    scan.compiled_episodes.cache_clear()
    replicas = [kernel.Replica(scenario.replace(seed=5), e) for e in (0, 1)]
    batches = [kernel.run_batch(replicas, s.jax_policy()) for s in schedulers]
    info = scan.compiled_episodes.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    for i, rep in enumerate(replicas):  # the second scheduler's own decisions, through the shared kernel
        log, _, backlog = python_episode(rep.scenario, schedulers[1], rep.episode)
        assert_logs_match(batches[1].task_log(i, rep), log)
        np.testing.assert_allclose(batches[1].backlog[i], backlog, rtol=0, atol=TOL)
    assert not np.array_equal(batches[0].outputs.subset, batches[1].outputs.subset)  # other networks


def _python_training(scenario, name, options, episodes):
    from mecsim.streams import stream

    sched = make_scheduler(name, scenario, rng=stream(scenario.seed, "scheduler"), **options)
    sim = Simulation(scenario, sched)
    return sched, [sim.run_episode(e).metrics for e in range(episodes)]


@pytest.mark.parametrize("name, options", [("amcoedge", {}), ("smcoedge-topk", {"k": 2})])
def test_kernel_training_takes_the_python_paths_steps(name, options):
    """Both paths call the learner's same functions with the same keys, exploration included: after
    training, the curves, replay buffers, counters and every network weight agree exactly (one replica: with
    more, XLA may vectorise a float32 step differently, see test_training_engines)."""
    from mecsim.backends.kernel.training import KernelTrainer

    scenario = learner_scenario()
    options = dict(
        learn_start=5, learn_every=2, replace_target_iter=3, memory_size=40, greedy_increment=0.05, **options
    )
    python, metrics = _python_training(scenario, name, options, 4)
    trainer = KernelTrainer(scenario, name, [scenario.seed], options)
    tables = trainer.run(4, timing=False)
    compiled = trainer.write_back()[0]
    assert (compiled.slot_step, compiled.learn_step) == (python.slot_step, python.learn_step)
    assert python.learn_step > 5 and 0 < python.greedy_prob < 1  # learning and exploring
    assert tables[0]["mean_makespan"].tolist() == [m["mean_makespan"] for m in metrics]
    for got, want in zip(jax.tree.leaves(compiled.state), jax.tree.leaves(python.state)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_checkpoint_runs_on_the_kernel(tmp_path):
    scenario = learner_scenario()
    sched = make_scheduler("amcoedge", scenario)
    sched.save(str(tmp_path / "ckpt"))
    kw = dict(checkpoint=str(tmp_path / "ckpt"), timing=False, progress=False)
    python, _ = run(scenario, "amcoedge", 2, engine="python", **kw)
    compiled, _ = run(scenario, "amcoedge", 2, engine="compiled", **kw)
    np.testing.assert_allclose(compiled["mean_makespan"], python["mean_makespan"], rtol=0, atol=TOL)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1)))
def test_policy_keys_are_jax_keys_computed_on_the_host(seed):
    """`raw_key` (no JAX call, so it does not wait for a compiled call in flight) gives JAX's own key data."""
    from mecsim.backends.kernel.scan import raw_key
    from mecsim.jaxconfig import x64

    got = raw_key(seed)
    for mode in (jax.enable_x64(False), x64()):
        with mode:
            want = np.asarray(jax.random.key_data(jax.random.PRNGKey(seed)))
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_compiler_options_keep_what_this_xla_knows_and_drop_the_rest(monkeypatch):
    """An option this XLA does not know is dropped alone (the others stay); the options compile a scan that
    updates a carried buffer in one branch of a cond (the learners' pattern) to the same values."""
    from mecsim import jaxconfig

    known = {"xla_cpu_copy_insertion_use_region_analysis": True}
    jaxconfig.compiler_options.cache_clear()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(jaxconfig, "COMPILER_OPTIONS", {**known, "xla_no_such_option": 1})
            assert jaxconfig.compiler_options() == (known if jax.default_backend() == "cpu" else {})
    finally:  # later compilations get the package's options again
        jaxconfig.compiler_options.cache_clear()
    if jax.default_backend() == "cpu":
        assert jaxconfig.compiler_options() == jaxconfig.COMPILER_OPTIONS

    def run(buffer, rows):
        def step(buf, row):
            written = lax.cond(row[0] > 0, lambda b: b.at[row[1].astype(int) % 7].set(row), lambda b: b, buf)
            return written, written.sum()

        return lax.scan(step, buffer, rows)

    rows = jax.random.normal(jax.random.PRNGKey(3), (50, 4)) * 5
    plain = jax.jit(run)(jnp.zeros((7, 4)), rows)
    tuned = jaxconfig.jit(run)(jnp.zeros((7, 4)), rows)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(tuned)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
