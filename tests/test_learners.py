"""The DQN schedulers: action spaces, TD target, target copies, exploration, transitions,
checkpoints, learning on a tiny scenario, and determinism."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from mecsim.allocation import subset_masks
from mecsim.config import Scenario
from mecsim.engine import Simulation
from mecsim.jaxconfig import x64
from mecsim.learning import replay
from mecsim.learning.dqn import DQN, DQNConfig, DQNState, td_loss
from mecsim.learning.heads import AllSubsets
from mecsim.plugins import make_scheduler
from mecsim.runner import run_episodes
from mecsim.scheduling import SchedulerError, SlotFeedback, SlotObservation
from mecsim.streams import stream
from mecsim.training import train

TINY = Scenario(
    n_bs=3,
    capacities=(2.0, 5.0, 20.0),
    rates=(400.0, 450.0, 500.0),
    tasks_per_slot=4,
    arrival_prob=0.8,
    slots=11,
    seed=1,
)
FAST = dict(learn_start=10, learn_every=1, greedy_increment=0.01, replace_target_iter=10, memory_size=200)


def scenario_for(n_bs: int, **fields) -> Scenario:
    return Scenario(n_bs=n_bs, capacities=(10.0,) * n_bs, rates=(400.0,) * n_bs, **fields)


def greedy_eval(scheduler, episodes: int = 5) -> float:
    scheduler.train(False)
    df, _ = run_episodes(
        Simulation(TINY, scheduler), "x", episodes, phase="eval", stream_name="evaluation", progress=False
    )
    return float(df["mean_makespan"].mean())


# -- action spaces --------------------------------------------------------------------------------
SPEC_31 = (
    [(0,), (1,), (2,), (3,), (4,)]
    + [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    + [
        (0, 1, 2),
        (0, 1, 3),
        (0, 1, 4),
        (0, 2, 3),
        (0, 2, 4),
        (0, 3, 4),
        (1, 2, 3),
        (1, 2, 4),
        (1, 3, 4),
        (2, 3, 4),
    ]
    + [(0, 1, 2, 3), (0, 1, 2, 4), (0, 1, 3, 4), (0, 2, 3, 4), (1, 2, 3, 4)]
    + [(0, 1, 2, 3, 4)]
)


@pytest.mark.parametrize("n_bs", [3, 4, 5, 6])
def test_amcoedge_actions_are_all_subsets_by_size_then_lexicographic(n_bs):
    sched = make_scheduler("amcoedge", scenario_for(n_bs))
    n_actions = sched.head.n_actions
    assert n_actions == 2**n_bs - 1
    with x64():
        masks = np.asarray(sched.head.subsets(np.arange(n_actions)[:, None], np.zeros(n_actions, int)))
    members = [tuple(np.flatnonzero(row)) for row in masks]
    expected = [c for k in range(1, n_bs + 1) for c in itertools.combinations(range(n_bs), k)]
    assert members == expected
    assert np.array_equal(masks, subset_masks(n_bs))
    assert sched.state.params["Dense_3"]["kernel"].shape == (n_bs, 20, n_actions)  # one net per BS
    if n_bs == 5:
        assert members == SPEC_31


def test_drlcoedge_and_smcoedge_action_spaces():
    drl = make_scheduler("drlcoedge", scenario_for(5))
    bs = np.array([2, 2, 0])
    with x64():
        pairs = np.asarray(drl.head.subsets(np.array([[2], [4], [3]]), bs))
        sm = make_scheduler("smcoedge", scenario_for(5))
        rows = np.asarray(sm.head.subsets(np.arange(10)[:, None], np.zeros(10, int)))
        topk = make_scheduler("smcoedge-topk", scenario_for(5), k=2)
        q = np.array([[0.1, 0.9, 0.5, 0.7, 0.2]])
        greedy = np.asarray(topk.head.greedy(q))
        rand = np.asarray(topk.head.random(jax.random.PRNGKey(0), 200))
        picked = np.asarray(topk.head.subsets(greedy, np.zeros(1, int)))
    assert pairs.tolist() == [[0, 0, 1, 0, 0], [0, 0, 1, 0, 1], [1, 0, 0, 1, 0]]
    assert [tuple(np.flatnonzero(r)) for r in rows] == list(itertools.combinations(range(5), 3))
    assert greedy.tolist() == [[1, 3]] and picked.tolist() == [[0, 1, 0, 1, 0]]  # descending Q
    assert rand.shape == (200, 2) and np.all(rand[:, 0] != rand[:, 1])
    with pytest.raises(SchedulerError, match="k = 6"):
        make_scheduler("smcoedge", scenario_for(5), k=6)


def test_options_are_parsed_and_checked():
    sched = make_scheduler("drlcoedge", scenario_for(4), hidden=[8, 8, 8], lr="0.01", memory_size=64.0)
    assert sched.config.hidden == (8, 8, 8) and sched.config.lr == 0.01 and sched.config.memory_size == 64
    assert sched.state.params["Dense_3"]["kernel"].shape == (4, 8, 4)
    with pytest.raises(SchedulerError, match="unknown options"):
        make_scheduler("amcoedge", scenario_for(3), epsilon=0.5)
    with pytest.raises(SchedulerError, match="observation = 'pixels'"):
        make_scheduler("amcoedge", scenario_for(3), observation="pixels")
    with pytest.raises(SchedulerError, match="option lr = 'fast'"):
        make_scheduler("amcoedge", scenario_for(3), lr="fast")
    with pytest.raises(SchedulerError, match="hidden"):
        make_scheduler("amcoedge", scenario_for(3), hidden=[8, 0])
    with pytest.raises(SchedulerError, match="memory_size = 0"):
        make_scheduler("amcoedge", scenario_for(3), memory_size=0)


def test_reference_initialisers():
    state = DQN(DQNConfig(hidden=(64,), init_std=0.3), AllSubsets(2)).init(0)
    kernel = np.asarray(state.params["Dense_0"]["kernel"])
    assert np.all(np.asarray(state.params["Dense_0"]["bias"]) == pytest.approx(0.1))
    assert abs(kernel.std() - 0.3) < 0.03 and abs(kernel.mean()) < 0.03
    assert not np.array_equal(kernel[0], kernel[1])  # independent agents


# -- learning rule --------------------------------------------------------------------------------
def linear(params, x):
    return x @ params


def test_td_target_replaces_only_the_taken_action():
    # Q_eval(s) = s @ W, Q_target(s') = s' @ W_t, with identity matrices for easy numbers
    params, target = jnp.eye(3), 2.0 * jnp.eye(3)
    s = jnp.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    s2 = jnp.array([[0.5, 0.0, 0.25], [1.0, 1.0, 1.0]])
    a = jnp.array([[0], [2]])
    r = jnp.array([-0.2, -1.0])
    gamma = 0.9
    loss = td_loss(params, target, linear, s, a, r, s2, gamma)
    # q_next = (1, 0, .5) and (2, 2, 2): targets -0.2 + 0.9*1 = 0.7 for action 0, -1 + 0.9*2 = 0.8 for action 2
    errors = np.array([[0.7 - 1.0, 0, 0], [0, 0, 0.8 - 0.0]])
    assert float(loss) == pytest.approx(np.mean(errors**2))  # mean over batch x actions (1/n_actions scaling)
    grad = jax.grad(td_loss)(params, target, linear, s, a, r, s2, gamma)
    assert not np.allclose(grad, 0.0)
    assert np.allclose(jax.grad(td_loss, argnums=1)(params, target, linear, s, a, r, s2, gamma), 0.0)


def test_topk_td_target_uses_sorted_next_values():
    params, target = jnp.eye(4), jnp.eye(4)
    s = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    s2 = jnp.array([[0.1, 0.4, 0.3, 0.2]])
    a = jnp.array([[3, 0]])  # stored order: first the best, then the second
    loss = td_loss(params, target, linear, s, a, jnp.array([1.0]), s2, 0.5)
    # target[3] = 1 + 0.5*0.4, target[0] = 1 + 0.5*0.3
    expected = ((1.2 - 4.0) ** 2 + (1.15 - 1.0) ** 2) / 4
    assert float(loss) == pytest.approx(expected)


def filled_state(dqn: DQN, rows: int = 40, seed: int = 0) -> DQNState:
    """A learner state whose agents' buffers hold ``rows`` random transitions each."""
    rng = np.random.default_rng(seed)
    state = dqn.init(0)
    n, f = dqn.n_agents, dqn.n_features
    agents = np.repeat(np.arange(n), rows).astype(np.int32)
    with x64():
        return jax.jit(DQN.store_rows, static_argnums=0)(
            dqn,
            state,
            agents,
            np.ones(n * rows, bool),
            rng.random((n * rows, f)),
            rng.integers(dqn.n_actions, size=(n * rows, 1)).astype(np.int32),
            -rng.random(n * rows),
            rng.random((n * rows, f)),
        )


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


LEARN = jax.jit(DQN.learn, static_argnums=0)


def test_target_copied_before_update_every_replace_iter_learns():
    dqn = DQN(DQNConfig(hidden=(8,), replace_target_iter=3), AllSubsets(2))
    state = filled_state(dqn)
    copies = []
    with x64():
        for step in range(8):
            before = state
            state = LEARN(dqn, state, np.int64(step))
            copied = leaves_equal(state.target, before.params)
            assert copied or leaves_equal(state.target, before.target)
            if copied:
                copies.append(step)
            assert not leaves_equal(state.params, before.params)  # every learn updates
        assert float(dqn.greedy_prob(np.int64(8))) == pytest.approx(0.008)
    assert copies == [0, 3, 6]


def test_empty_agent_is_not_updated():
    dqn = DQN(DQNConfig(hidden=(8,)), AllSubsets(2))
    state = dqn.init(0)
    with x64():
        state = jax.jit(DQN.store_rows, static_argnums=0)(
            dqn,
            state,
            np.zeros(5, np.int32),
            np.ones(5, bool),
            np.ones((5, 3)),
            np.zeros((5, 1), np.int32),
            -np.ones(5),
            np.ones((5, 3)),
        )
        after = LEARN(dqn, state, np.int64(1))
    before_kernel = np.asarray(state.params["Dense_0"]["kernel"])
    after_kernel = np.asarray(after.params["Dense_0"]["kernel"])
    assert not np.array_equal(after_kernel[0], before_kernel[0]) and np.array_equal(
        after_kernel[1], before_kernel[1]
    )


@pytest.mark.parametrize(
    "learns, expected",
    [(0, 0.0), (1, 0.001), (10, 0.01), (500, 0.5), (989, 0.989), (990, 0.99), (5000, 0.99)],
)
def test_exploration_schedule(learns, expected):
    with x64():
        assert float(DQN(DQNConfig(), AllSubsets(3)).greedy_prob(np.int64(learns))) == pytest.approx(expected)


def test_replay_samples_with_replacement_from_filled_part_and_wraps_around():
    buffer = replay.empty(1, 10, 2, 1)
    add = jax.jit(replay.add)
    with x64():
        buffer = add(
            buffer,
            np.zeros(6, np.int32),
            np.ones(6, bool),
            np.arange(6)[:, None] * np.ones((6, 2)),
            np.zeros((6, 1), np.int32),
            np.zeros(6),
            np.zeros((6, 2)),
        )
        (s, _, _, _), active = replay.sample(buffer, jax.random.PRNGKey(0), 64)
        assert bool(active[0])
        drawn = np.asarray(s)[0, :, 0].tolist()
        assert set(drawn) <= set(range(6)) and len(set(drawn)) < 64  # with replacement, filled rows only
        buffer = add(
            buffer,
            np.zeros(7, np.int32),
            np.ones(7, bool),
            100 + np.arange(7)[:, None] * np.ones((7, 2)),
            np.zeros((7, 1), np.int32),
            np.zeros(7),
            np.zeros((7, 2)),
        )
    assert sorted(np.asarray(buffer.states)[0, :, 0].tolist()) == [
        3,
        4,
        5,
        100,
        101,
        102,
        103,
        104,
        105,
        106,
    ]  # ring
    assert int(buffer.count[0]) == 13


def test_fast_top_indices_equal_top_k_with_unfilled_rows_and_ties():
    """The float32 preselection in `replay.top_indices` gives top-k's indices in top-k's order: on
    uniform scores with unfilled rows (-1, many ties), and on coarse scores full of exact ties."""
    top_k = jax.jit(lambda s: jax.lax.top_k(s, 64)[1])
    fast = jax.jit(lambda s: replay.top_indices(s, 64))
    with x64():
        for i in range(40):
            key = jax.random.PRNGKey(i)
            scores = jax.random.uniform(key, (5, 1000))
            if i % 2:  # coarse: exact float64 ties, broken by the lower index
                scores = jnp.round(scores * (10 + i)) / (10 + i)
            filled = jax.random.randint(jax.random.fold_in(key, 1), (5,), 0, 1001)
            scores = jnp.where(jnp.arange(1000) < filled[:, None], scores, -1.0)
            np.testing.assert_array_equal(np.asarray(fast(scores)), np.asarray(top_k(scores)))


def test_sampling_without_replacement_draws_distinct_filled_rows():
    rows = {"s": np.arange(2 * 1000, dtype=np.float32).reshape(2, 1000)}
    with x64():
        batch = replay.sample_without_replacement(rows, np.array([1500, 70]), jax.random.PRNGKey(3), 64)
    drawn = np.asarray(batch["s"])
    assert len(set(drawn[0].tolist())) == 64  # a full buffer: 64 distinct rows of 1000
    assert len(set(drawn[1].tolist())) == 64 and drawn[1].max() < 1070  # only the 70 filled rows


def test_invalid_rows_are_not_stored():
    with x64():
        buffer = jax.jit(replay.add)(
            replay.empty(2, 4, 1, 1),
            np.array([0, 1, 1, 0], np.int32),
            np.array([True, True, False, False]),
            np.ones((4, 1)),
            np.zeros((4, 1), np.int32),
            np.zeros(4),
            np.ones((4, 1)),
        )
    assert np.asarray(buffer.count).tolist() == [1, 1]


# -- transitions and the learning schedule --------------------------------------------------------
def test_transitions_follow_the_reference_rule():
    sc = scenario_for(2, tasks_per_slot=3)
    sched = make_scheduler("amcoedge", sc, rng=np.random.default_rng(0))
    backlog, next_backlog = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    bs, task, size = np.array([0, 0, 1]), np.array([0, 2, 1]), np.array([2.5, 3.5, 4.5])
    for slot in (0, 1):
        decision = sched.decide_slot(
            SlotObservation(
                time=0.0,
                slot=slot,
                bs=bs,
                task=task,
                size=size,
                density=np.full(3, 0.2),
                backlog=backlog,
                scenario=sc,
            )
        )
        taken = decision.subset
        sched.on_slot_end(
            SlotFeedback(
                slot=slot,
                bs=bs,
                task=task,
                size=size,
                density=np.full(3, 0.2),
                backlog=backlog,
                subsets=taken,
                fractions=taken / taken.sum(1, keepdims=True),
                makespan=np.array([0.1, 0.2, 0.3]),
                failed=np.zeros(3, bool),
                reward=np.array([-0.1, -0.2, -0.3]),
                next_backlog=next_backlog,
                next_sizes=np.array([[5.0, 0.0, 0.0], [6.0, 7.0, 0.0]]),
            )
        )
        assert sched.slot_step == slot + 1
    buf = jax.tree.map(np.asarray, sched.state.replay)
    assert buf.count.tolist() == [2, 1]  # slot 0 skipped
    # BS 0, task 0 -> next task slot (0, 1) is empty: [0, Q(t)]; task 2 is the last: [d(t+1, 0, 0), Q(t+1)]
    assert buf.states[0, :2].tolist() == [[2.5, 1.0, 2.0], [3.5, 1.0, 2.0]]
    assert buf.next_states[0, :2].tolist() == [[0.0, 1.0, 2.0], [5.0, 3.0, 4.0]]
    assert buf.next_states[1, 0].tolist() == [0.0, 1.0, 2.0]  # BS 1, task 1 -> (1, 2) empty
    assert buf.rewards[0, :2].tolist() == pytest.approx([-0.1, -0.2])
    masks = subset_masks(2)
    assert np.array_equal(masks[buf.actions[0, :2, 0]], taken[:2])
    sched.train(False)
    sched.decide_slot(SlotObservation(0.0, 1, bs, task, size, np.full(3, 0.2), backlog, sc))
    assert np.asarray(sched.state.replay.count).tolist() == [2, 1]


def test_learning_schedule_counts_slots_across_episodes():
    sc = TINY.replace(slots=6)  # 5 decision slots per episode
    sched = make_scheduler("drlcoedge", sc, rng=stream(1, "scheduler"), learn_start=12, learn_every=4)
    run_episodes(Simulation(sc, sched), "drlcoedge", 6, progress=False)
    assert sched.slot_step == 30
    assert sched.learn_step == len([k for k in range(1, 31) if k > 12 and k % 4 == 0])


# -- training on the engine -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    return train(
        TINY,
        "amcoedge",
        30,
        seed=TINY.seed,
        out_dir=out,
        eval_episodes=3,
        options=FAST,
        progress=False,
        timing=False,
    )


def test_training_improves_on_the_untrained_policy(trained):
    untrained = make_scheduler("amcoedge", TINY, rng=stream(TINY.seed, "scheduler"), **FAST)
    before, after = greedy_eval(untrained), greedy_eval(trained.scheduler)
    assert after < 0.85 * before


def test_training_writes_table_and_checkpoint(trained):
    df = pd.read_parquet(trained.table)
    assert df["phase"].tolist() == ["online"] * 30 + ["eval"] * 3
    assert (trained.checkpoint / "config.json").exists()
    assert trained.scheduler.learn_step == 30 * 10 - 10


def test_checkpoint_round_trip_gives_identical_decisions(trained):
    loaded = make_scheduler("amcoedge", TINY)  # default options: the shape comes from the checkpoint
    loaded.load(str(trained.checkpoint))
    loaded.train(False)
    trained.scheduler.train(False)
    assert loaded.config == trained.scheduler.config
    rng = np.random.default_rng(5)
    n = 40
    obs = SlotObservation(
        0.0,
        3,
        rng.integers(3, size=n),
        np.arange(n) % 4,
        rng.uniform(2, 5, n),
        np.full(n, 0.2),
        rng.uniform(0, 30, 3),
        TINY,
    )
    assert np.array_equal(loaded.decide_slot(obs).subset, trained.scheduler.decide_slot(obs).subset)
    assert leaves_equal(loaded.state.params, trained.scheduler.state.params)
    with pytest.raises(SchedulerError, match="agents"):
        make_scheduler("amcoedge", scenario_for(4)).load(str(trained.checkpoint))


@pytest.mark.parametrize("name", ["smcoedge-topk", "amcoedge"])
def test_short_training_is_deterministic(name):
    options = dict(FAST, observation="rich") if name == "amcoedge" else FAST
    runs = [
        train(TINY.replace(slots=6), name, 5, eval_episodes=1, options=options, progress=False, timing=False)
        for _ in range(2)
    ]
    a, b = (r.episodes.drop(columns=["git_commit"]) for r in runs)
    pd.testing.assert_frame_equal(a, b)
    assert runs[0].scheduler.learn_step > 0
    assert leaves_equal(runs[0].scheduler.state.params, runs[1].scheduler.state.params)
    other = train(
        TINY.replace(slots=6), name, 5, seed=2, eval_episodes=0, options=options, progress=False, timing=False
    )
    assert not leaves_equal(runs[0].scheduler.state.params, other.scheduler.state.params)


def test_rich_observation_uses_per_task_decisions():
    sched = make_scheduler("amcoedge", TINY, observation="rich")
    assert sched.decide_slot is None and sched.dqn.n_features == 2 + 2 * 3
    run_episodes(Simulation(TINY, sched), "amcoedge", 3, progress=False)
    assert np.asarray(sched.state.replay.count).sum() > 0
    assert sched.kernel_learner() is None and sched.jax_policy() is None


def test_learner_seed_varies_only_the_learner():
    base = make_scheduler("drlcoedge", TINY.replace(seed=5))
    same = make_scheduler("drlcoedge", TINY, learner_seed=5)
    other = make_scheduler("drlcoedge", TINY)
    assert leaves_equal(base.state, same.state)  # networks and the replay sampling key
    assert not leaves_equal(base.state.params, other.state.params)
    assert same.learner_seed == 5 and other.learner_seed == TINY.seed
