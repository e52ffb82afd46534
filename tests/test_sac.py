"""The soft actor-critic learners: diffusion chain, temperature, both engines, bad options, checkpoints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mecsim.config import Scenario
from mecsim.learning.diffusion import EpsNet, denoise, vp_schedule
from mecsim.runner import run
from mecsim.scheduling import SchedulerError
from mecsim.training import train


def test_vp_schedule_matches_the_reference_coefficients():
    s = vp_schedule(5)  # spec §6.2, to the 4 decimals printed there
    np.testing.assert_allclose(s.betas, [0.1959, 0.4588, 0.6358, 0.7549, 0.8350], atol=6e-5)
    np.testing.assert_allclose(s.alphas_cumprod, [0.8041, 0.4352, 0.1585, 0.0389, 0.0064], atol=6e-5)
    np.testing.assert_allclose(s.sqrt_recip, [1.1152, 1.5159, 2.5118, 5.0733, 12.4909], atol=6e-5)
    np.testing.assert_allclose(s.sqrt_recipm1, [0.4935, 1.1393, 2.3042, 4.9738, 12.4508], atol=6e-5)
    np.testing.assert_allclose(s.coef1, [1.0, 0.7284, 0.4984, 0.3127, 0.1657], atol=6e-5)
    np.testing.assert_allclose(s.coef2, [0.0, 0.2551, 0.4051, 0.4335, 0.3929], atol=6e-5)
    np.testing.assert_allclose(s.sigma, [0.0, 0.3989, 0.6532, 0.8130, 0.8988], atol=1.1e-4)


@pytest.mark.parametrize("steps", [0, -3])
def test_zero_or_negative_diffusion_steps_are_refused(steps):
    with pytest.raises(SchedulerError, match=r"'ddrl-ats'.*diffusion_steps"):
        run(Scenario(preset="dedgeai", slots=3), "ddrl-ats", 1, scheduler_options={"diffusion_steps": steps})


def test_fast_chain_equals_the_network_applied_step_by_step():
    net = EpsNet((20, 20), 6)
    states = jax.random.normal(jax.random.PRNGKey(1), (7, 8))
    start = jax.random.normal(jax.random.PRNGKey(2), (7, 6))
    params = net.init(jax.random.PRNGKey(0), start, jnp.zeros((7,)), states)["params"]
    schedule = vp_schedule(5)
    key = jax.random.PRNGKey(3)

    def chain(noise):  # the chain of spec §6.2, written out with the network as a black box
        x = start
        for k in reversed(range(5)):
            eps = net.apply({"params": params}, x, jnp.full((7,), k), states)
            x0 = schedule.sqrt_recip[k] * x - schedule.sqrt_recipm1[k] * eps
            x = (
                schedule.coef1[k] * x0
                + schedule.coef2[k] * x
                + (schedule.sigma[k] * noise[k - 1] if k else 0.0)
            )
        return x

    noisy = chain(jax.random.normal(key, (4, 7, 6)))
    np.testing.assert_allclose(denoise(params, schedule, states, start, key), noisy, rtol=2e-5, atol=2e-5)
    # no noise: the deterministic chain whatever the key, and no random draws at all
    a = denoise(params, schedule, states, start, key, noise_scale=0.0)
    b = denoise(params, schedule, states, start, jax.random.PRNGKey(9), noise_scale=0.0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, chain(jnp.zeros((4, 7, 6))), rtol=2e-5, atol=2e-5)
    traced = str(jax.make_jaxpr(lambda k: denoise(params, schedule, states, start, k, noise_scale=0.0))(key))
    assert "random_bits" not in traced and "threefry" not in traced
    traced = str(jax.make_jaxpr(lambda k: denoise(params, schedule, states, start, k))(key))
    assert "random_bits" in traced or "threefry" in traced  # the check above can see a draw


SMALL = dict(
    preset="dedgeai", n_bs=4, capacities=(10.0, 20.0, 15.0, 30.0), rates=(400.0, 450.0, 420.0, 480.0),
    tasks_per_slot=6, slots=8,
)  # fmt: skip


@pytest.mark.parametrize("name", ["ddrl-ats", "sac-ts", "dqn-ts"])
def test_both_engines_take_the_same_steps(name):
    sc = Scenario(**SMALL)
    options = {"learn_start": 10, "batch_size": 8}
    py = train(sc, name, 3, eval_episodes=0, engine="python", options=options, progress=False)
    jx = train(sc, name, 3, eval_episodes=0, engine="compiled", options=options, progress=False)
    # the same decisions: equal up to the last bit of the slot arithmetic (batched NumPy vs scanned JAX)
    np.testing.assert_allclose(py.episodes.mean_makespan.values, jx.episodes.mean_makespan.values, rtol=1e-12)
    assert py.scheduler.learn_step == jx.scheduler.learn_step == 3 * 7


def test_ddrl_amsa_splits_tasks_on_the_amcoedge_point():
    sc = Scenario(slots=4)
    options = {"learn_start": 20, "batch_size": 8}
    py = train(sc, "ddrl-amsa", 2, eval_episodes=0, engine="python", options=options, progress=False)
    jx = train(sc, "ddrl-amsa", 2, eval_episodes=0, engine="compiled", options=options, progress=False)
    np.testing.assert_allclose(py.episodes.mean_makespan.values, jx.episodes.mean_makespan.values, rtol=1e-12)
    _, tasks = run(sc, "ddrl-amsa", 1, engine="python", progress=False, keep_tasks=True)  # exploring
    assert (tasks["subset"].map(sum) > 1).any()  # some tasks are split over several servers
    assert np.allclose(tasks["fractions"].map(sum), 1.0)


def test_temperature_falls_below_an_unreachable_target_and_rises_towards_a_high_one():
    sc = Scenario(**SMALL)
    low = train(
        sc, "ddrl-ats", 2, eval_episodes=0, options={"learn_start": 5, "batch_size": 4}, progress=False
    )
    high = train(
        sc,
        "ddrl-ats",
        2,
        eval_episodes=0,
        options={"learn_start": 5, "batch_size": 4, "target_entropy_ratio": 1.0},
        progress=False,
    )
    start = np.log(0.05)
    assert np.all(np.asarray(low.scheduler.state.nets.log_alpha) < start)  # H >= 0 > -1
    assert np.all(np.asarray(high.scheduler.state.nets.log_alpha) > start)  # H < log|A|


BAD_OPTIONS = [
    ({"alpha_init": float("inf")}, "alpha_init"),
    ({"alpha_init": 0.0}, "alpha_init"),
    ({"target_entropy": float("nan")}, "target_entropy"),
    ({"target_entropy_ratio": 2.0}, "target_entropy_ratio"),
    ({"start": "uniform"}, "start"),
    ({"batch_size": 2000}, "memory_size"),
]


@pytest.mark.parametrize("options,field", BAD_OPTIONS, ids=[f for _, f in BAD_OPTIONS])
def test_bad_options_are_refused_by_name(options, field):
    with pytest.raises(SchedulerError, match=rf"'ddrl-ats'.*{field}"):
        run(Scenario(**SMALL), "ddrl-ats", 1, scheduler_options=options, progress=False)


def test_checkpoints_round_trip_and_refuse_another_action_space(tmp_path):
    sc = Scenario(**SMALL)
    res = train(
        sc,
        "ddrl-ats",
        1,
        eval_episodes=0,
        out_dir=tmp_path / "ats",
        options={"learn_start": 5},
        progress=False,
    )
    df, _ = run(sc, "ddrl-ats", 1, checkpoint=str(res.checkpoint), engine="python", progress=False)
    assert np.isfinite(df.mean_makespan[0])
    with pytest.raises(SchedulerError, match="saved by"):
        run(sc, "ddrl-amsa", 1, checkpoint=str(res.checkpoint), progress=False)
    other = sc.replace(n_bs=3, capacities=(10.0, 20.0, 15.0), rates=(400.0, 450.0, 420.0))
    with pytest.raises(SchedulerError, match="4 agents, scenario has 3 BSs"):
        run(other, "ddrl-ats", 1, checkpoint=str(res.checkpoint), progress=False)


def test_dqn_ts_copies_the_target_at_the_first_update_and_every_200():
    from mecsim.learning.dqn_ts import DQNTS, DQNTSConfig

    learner = DQNTS(DQNTSConfig(learn_start=0, batch_size=4, memory_size=8), 1, 3, 2, 4, "dedgeai")
    state = learner.init(0)
    rng = np.random.default_rng(0)
    rows = {
        "s": rng.normal(size=(1, 8, 3)).astype(np.float32),
        "a": rng.integers(0, 3, (1, 8)).astype(np.int32),
        "r": rng.normal(size=(1, 8)).astype(np.float32),
        "s2": rng.normal(size=(1, 8, 3)).astype(np.float32),
    }
    state = state._replace(replay={"rows": rows, "count": np.array([8])})
    first = state.nets.params
    # a fresh target is a copy of the eval net (PyTorch load_state_dict), so make it differ first
    state = state._replace(nets=state.nets._replace(target=jax.tree.map(lambda a: a + 1.0, first)))
    update = jax.jit(learner.update)
    state = update(state, 0)
    leaves = lambda tree: np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)])  # noqa: E731
    np.testing.assert_array_equal(leaves(state.nets.target), leaves(first))  # copied before the first step
    before = state.nets.params
    for step in range(1, 200):
        state = update(state, step)
        if step == 199:
            before = state.nets.params
    np.testing.assert_array_equal(leaves(state.nets.target), leaves(first))  # unchanged for 199 updates
    state = update(state, 200)
    np.testing.assert_array_equal(leaves(state.nets.target), leaves(before))  # the 201st update copies
