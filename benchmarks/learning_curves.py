"""Do learners train alike on the compiled kernel and on the Python path? Per-seed last-50 means, side by side.

The two engines compute the same equations and call the learner's same functions with the
same random keys (`mecsim.learning`): a seed trained alone takes bit-identical steps on
both. The kernel here trains all seeds at once, vmapped, and XLA may then vectorise a
float32 step differently; where that tips a near-tie between two actions, the seed's two
curves part ways. So the engines are compared in distribution. This script trains one
learner on both engines for the same seeds (published episode count by default, each
method on its own preset) and prints, as ``name: value`` lines, every seed's mean
make-span over the last 50 online episodes, how many seeds came out identical, the two
means, their difference with a 95 % Welch interval, and the Welch t-test and
Kolmogorov-Smirnov p-values.

Usage: ``python benchmarks/learning_curves.py [--method amcoedge] [--seeds 0-7] [--workers 2]``.
The Python path costs about 2-4 minutes per 500-episode seed on one core.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy import stats

from mecsim.config import Scenario
from mecsim.training import train, train_many

PUBLISHED_EPISODES = {"amcoedge": 500, "smcoedge": 300, "drlcoedge": 400}


def last50(table) -> float:
    online = table[table["phase"] == "online"]
    return float(online["mean_makespan"].tail(50).mean())


def python_run(args: tuple[str, int, int]) -> float:
    method, seed, episodes = args
    scenario = Scenario(preset=method, seed=seed)
    return last50(
        train(scenario, method, episodes, eval_episodes=0, progress=False, engine="python").episodes
    )


def seed_list(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", default="amcoedge", choices=sorted(PUBLISHED_EPISODES))
    parser.add_argument("--seeds", type=seed_list, default=list(range(8)), help="e.g. 0-7 or 0,3,5")
    parser.add_argument("--episodes", type=int, default=None, help="default: the published count")
    parser.add_argument("--workers", type=int, default=2, help="processes for the Python path")
    args = parser.parse_args()
    episodes = args.episodes or PUBLISHED_EPISODES[args.method]
    scenarios = [Scenario(preset=args.method, seed=s) for s in args.seeds]

    started = time.perf_counter()
    compiled = [
        last50(r.episodes)
        for r in train_many(scenarios, args.method, episodes, eval_episodes=0, timing=False)
    ]
    compiled_s = time.perf_counter() - started
    started = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")  # not fork: JAX's threads are running in this process
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=spawn) as pool:
        python = list(pool.map(python_run, [(args.method, s, episodes) for s in args.seeds]))
    python_s = time.perf_counter() - started

    figures: dict[str, float] = {}
    for seed, c, p in zip(args.seeds, compiled, python):
        figures[f"seed{seed}_compiled_last50"] = c
        figures[f"seed{seed}_python_last50"] = p
    a, b = np.array(compiled), np.array(python)
    figures["identical_seeds"] = float(np.sum(a == b))
    figures["compiled_mean"], figures["python_mean"] = a.mean(), b.mean()
    welch = stats.ttest_ind(a, b, equal_var=False)
    diff = a.mean() - b.mean()
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    dof = se**4 / (
        (a.var(ddof=1) / len(a)) ** 2 / (len(a) - 1) + (b.var(ddof=1) / len(b)) ** 2 / (len(b) - 1)
    )
    half = stats.t.ppf(0.975, dof) * se
    figures["difference_compiled_minus_python"] = diff
    figures["difference_ci95_low"], figures["difference_ci95_high"] = diff - half, diff + half
    figures["welch_t_pvalue"] = float(welch.pvalue)
    figures["ks_pvalue"] = float(stats.ks_2samp(a, b).pvalue)
    figures["compiled_wall_s"], figures["python_wall_s"] = compiled_s, python_s
    print(f"method: {args.method} ({episodes} episodes, own preset, seeds {args.seeds})")
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    main()
