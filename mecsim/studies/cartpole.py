"""The CartPole check of the diffusion-policy claim: DQN vs discrete SAC vs DSAC on CartPole-v1.

Every method is the learner of `mecsim.learning` with one agent (B = 1), trained online on the
JAX CartPole (`mecsim.envs.cartpole`) for the same number of environment steps, one update
per step after ``learn_start``, seeds vmapped. Time-limit truncation is not terminal (the
next state keeps its value); termination is. Every ``eval_every`` steps the greedy policy
(argmax π, or argmax Q) plays ``eval_episodes`` fresh episodes.

Methods (hyper-parameters in `METHODS`; ours, as the claim's paper gives none):

* ``dqn`` — DQN, ε decaying from 1 to 0.05, hard target copy every 500 updates;
* ``sac`` — discrete SAC with an MLP actor;
* ``dsac`` — discrete SAC whose actor is the 5-step diffusion chain (Gaussian start, the
  reference's ε-network);
* ``dsac-no-noise`` — the same chain without its posterior noise (where does a gain come from:
  the stochastic chain, or the network?);
* ``mlp-matched`` — SAC with an MLP actor of the diffusion ε-network's parameter count
  (5 762: 4 → 72 → 72 → 2).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..envs import cartpole
from ..jaxconfig import jit
from ..learning import replay as replay_buffer
from ..learning.dqn_ts import DQNTS, DQNTSConfig, epsilon_greedy
from ..learning.sac import SAC, SACConfig, SACState

COMMON = dict(hidden=(64, 64), gamma=0.99, memory_size=50_000, learn_start=1_000, batch_size=64)
SAC_COMMON = dict(COMMON, actor_lr=3e-4, critic_lr=1e-3, alpha_init=0.2, target_entropy_ratio=0.5, tau=0.005)
METHODS: dict[str, Any] = {
    "dqn": DQNTSConfig(
        **COMMON,
        lr=1e-3,
        epsilon=0.05,
        epsilon_start=1.0,
        epsilon_decay_updates=10_000,
        replace_target_iter=500,
    ),
    "sac": SACConfig(**SAC_COMMON, actor="mlp"),
    "dsac": SACConfig(**SAC_COMMON, actor="diffusion", start="gaussian"),
    "dsac-no-noise": SACConfig(**SAC_COMMON, actor="diffusion", start="gaussian", chain_noise=0.0),
    "mlp-matched": SACConfig(**SAC_COMMON, actor="mlp", actor_hidden=(72, 72)),
}
SOLVED = 475.0


class _OneAgent:
    """A learner of `mecsim.learning` as one agent on a 4-feature state."""

    @property
    def n_features(self) -> int:
        return cartpole.N_FEATURES

    def _empty_replay(self) -> dict:
        out = super()._empty_replay()
        out["rows"]["d"] = np.zeros((1, self.config.memory_size), np.float32)
        return out


@dataclass(frozen=True)
class CartPoleSAC(_OneAgent, SAC):
    def act(self, state: SACState, obs, key, explore: bool):
        actor = jax.tree.map(lambda a: a[0], state.nets.actor)
        logits = self.logits(actor, obs[None], None, key)[0]
        k = jax.random.fold_in(key, 1)
        return jax.random.categorical(k, logits) if explore else jnp.argmax(logits)


@dataclass(frozen=True)
class CartPoleDQN(_OneAgent, DQNTS):
    def act(self, state: SACState, obs, key, explore: bool):
        params = jax.tree.map(lambda a: a[0], state.nets.params)
        greedy = jnp.argmax(self.q_net.apply({"params": params}, obs[None])[0])
        if not explore:
            return greedy
        return epsilon_greedy(key, greedy, self.epsilon(state.nets.updates)[0], cartpole.N_ACTIONS)


def learner_of(method: str, overrides: dict | None = None):
    config = METHODS[method].model_copy(update=overrides or {})
    cls = CartPoleDQN if isinstance(config, DQNTSConfig) else CartPoleSAC
    return cls(config, 1, cartpole.N_ACTIONS, 1, 1, "dedgeai")


def _train_chunk(learner, n_steps: int, carry):
    """``n_steps`` environment steps (act, step, store, update) of one seed."""

    def body(carry, _):
        state, env, key, step = carry
        key, k_act, k_reset = jax.random.split(key, 3)
        obs = cartpole.observe(env)
        action = learner.act(state, obs, k_act, True)
        env2, reward, terminated, truncated = cartpole.step(env, action)
        row = {
            "s": obs[None],
            "a": action[None].astype(jnp.int32),
            "r": reward[None],
            "s2": cartpole.observe(env2)[None],
            "d": terminated[None].astype(jnp.float32),
        }
        buffers, count = replay_buffer.add_rows(
            state.replay["rows"], state.replay["count"], jnp.zeros(1, jnp.int32), jnp.ones(1, bool), row
        )
        state = state._replace(replay={"rows": buffers, "count": count})
        state = jax.lax.cond(
            step >= learner.config.learn_start, lambda s: learner.update(s, step), lambda s: s, state
        )
        env = jax.tree.map(
            lambda fresh, old: jnp.where(terminated | truncated, fresh, old), cartpole.reset(k_reset), env2
        )
        return (state, env, key, step + 1), None

    carry, _ = jax.lax.scan(body, carry, None, length=n_steps)
    return carry


def _evaluate(learner, state, key, episodes: int):
    """Mean return of ``episodes`` greedy episodes."""

    def episode(key):
        k_reset, k_run = jax.random.split(key)

        def cond(c):
            return ~c[2]

        def body(c):
            env, ret, _, k = c
            k, k_act = jax.random.split(k)
            env, reward, terminated, truncated = cartpole.step(
                env, learner.act(state, cartpole.observe(env), k_act, False)
            )
            return env, ret + reward, terminated | truncated, k

        return jax.lax.while_loop(cond, body, (cartpole.reset(k_reset), 0.0, False, k_run))[1]

    return jax.vmap(episode)(jax.random.split(key, episodes)).mean()


def run(
    method: str,
    seeds: list[int],
    steps: int = 50_000,
    eval_every: int = 2_500,
    eval_episodes: int = 5,
    progress: bool | None = None,
    overrides: dict | None = None,
) -> pd.DataFrame:
    """Train ``method`` for every seed at once; one row per (seed, evaluation point). ``overrides``:
    config fields to change from `METHODS` (e.g. a smaller ``learn_start`` for a smoke run)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: known methods are {', '.join(METHODS)}")
    if steps % eval_every:
        raise ValueError(f"steps = {steps} must be a multiple of eval_every = {eval_every}")
    learner = learner_of(method, overrides)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    state = _stack(learner, seeds)
    envs = jax.vmap(lambda k: cartpole.reset(jax.random.fold_in(k, 7)))(keys)
    carry = (state, envs, keys, jnp.zeros(len(seeds), jnp.int32))
    chunk = jit(jax.vmap(partial(_train_chunk, learner, eval_every)))
    evaluate = jit(jax.vmap(partial(_evaluate, learner, episodes=eval_episodes)))
    rows, started = [], time.perf_counter()
    for point in tqdm(
        range(1, steps // eval_every + 1), desc=f"cartpole {method}", disable=progress is False
    ):
        carry = chunk(carry)
        returns = np.asarray(evaluate(carry[0], jax.vmap(lambda k, p=point: jax.random.fold_in(k, p))(keys)))
        wall = time.perf_counter() - started
        rows += [
            dict(method=method, seed=s, steps=point * eval_every, eval_return=float(r), wall_s=wall)
            for s, r in zip(seeds, returns)
        ]
    return pd.DataFrame(rows)


def _stack(learner, seeds: list[int]):
    states = [learner.init(s) for s in seeds]
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *states)


# -- summary ---------------------------------------------------------------------------------------
def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % (scipy's trimmed mean, 25 % cut each side)."""
    from scipy import stats

    return float(stats.trim_mean(values, 0.25))


def summarise(runs: pd.DataFrame, resamples: int = 10_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-method table, pairwise tests). Final return = the last evaluation of each seed; AUC = the mean
    evaluation return over all points; steps to 475 = the first point at or above 475 (NaN if never)."""
    from scipy import stats

    rows, finals = [], {}
    for method, df in runs.groupby("method", sort=False):
        per_seed = df.sort_values("steps").groupby("seed")
        final = per_seed.eval_return.last().to_numpy()
        auc = per_seed.eval_return.mean().to_numpy()
        reach = per_seed.apply(lambda d: d.steps[d.eval_return >= SOLVED].min(), include_groups=False)
        finals[method] = final
        ci = stats.bootstrap((final,), iqm, n_resamples=resamples, method="percentile", random_state=0)
        rows.append(
            dict(
                method=method,
                seeds=len(final),
                final_iqm=iqm(final),
                final_iqm_lo=ci.confidence_interval.low,
                final_iqm_hi=ci.confidence_interval.high,
                auc_mean=float(auc.mean()),
                steps_to_475_median=float(np.nanmedian(reach)) if np.isfinite(reach).any() else np.nan,
                solved_fraction=float((final >= SOLVED).mean()),
                wall_s=float(df.wall_s.max()),
            )
        )
    tests = []
    names = list(finals)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            res = stats.mannwhitneyu(finals[a], finals[b], alternative="two-sided")
            gain = (finals[a].mean() - finals[b].mean()) / finals[b].mean() * 100
            tests.append(dict(a=a, b=b, mean_gain_pct=gain, mannwhitney_p=float(res.pvalue)))
    return pd.DataFrame(rows), pd.DataFrame(tests)


def markdown(df: pd.DataFrame) -> str:
    """A Markdown table of ``df`` (numbers to 4 significant digits)."""

    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot(runs: pd.DataFrame, path) -> None:
    """Greedy evaluation return against environment steps: mean over seeds with a 95 % bootstrap band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..results import write_bytes

    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(runs, x="steps", y="eval_return", hue="method", errorbar=("ci", 95), seed=0, ax=ax)
    ax.axhline(SOLVED, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="environment steps", ylabel="greedy return (5 episodes)", title="CartPole-v1")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
