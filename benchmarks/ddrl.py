"""Training speed and peak memory of the soft actor-critic schedulers on the compiled kernel.

Prints ``name: value`` lines:

* ``lad_ts_train_<E>ep_s`` — LAD-TS (`ddrl-ats`), E online episodes of the DEdgeAI scenario, one seed;
* ``ddrl_amsa_train_<E>ep_s`` — `ddrl-amsa`, E episodes at the AMCoEdge default point, one seed;
* ``ddrl_amsa_8seeds_over_1seed`` — wall time of 8 seeds trained at once in one process (vmapped, and split
  over the process's CPU devices, one per core unless $MECSIM_CPU_DEVICES says otherwise) over that of one
  seed;
* ``ddrl_amsa_1seed_sweep_train_<E>ep_s`` and ``ddrl_amsa_8seeds_sweep_train_<E>ep_s`` (alone: ``--only
  sweep``): the same training as the cells of a ``mecsim sweep`` on its default local cluster (one pinned
  worker per core; batches of at most ``sweep_batch_cells`` seeds, so 8 seeds run as 4 + 4 on 2 cores), Dask
  start-up and parquet writes included; ``ddrl_amsa_8seeds_sweep_over_1seed`` divides the 8 seeds' time by
  the faster of the two ways of training one seed (in one process, or as a sweep's only cell);
* ``*_peak_rss_mib`` — the peak resident memory of each run's process;
* with ``--only noise``: ``<name>_s_per_episode`` with and without the diffusion chains' Gaussian draws
  (``chain_noise = 0`` draws none), timed in one process in alternating blocks, and
  ``<name>_chain_noise_share``, one minus the median of the paired ratios: what those draws cost;
* with ``--reference DIR --reference-python PY`` (a checkout of ChangfuXu/DEdgeAI and a Python that has
  PyTorch): ``reference_lad_ts_cpu_s_per_episode`` of its ``main_lad.py`` run for a few episodes,
  ``lad_ts_cpu_s_per_episode`` of ours, and their ratio. CPU seconds, so that other jobs on the
  machine do not distort the comparison.

Each run is its own process (so its peak memory is its own) and includes compilation; the
first two episodes are timed apart as ``*_compile_s``. Usage:
``python benchmarks/ddrl.py [--episodes 500] [--only lad|amsa|seeds|sweep|noise|reference] [--reference DIR
--reference-python PY --reference-episodes 3]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

WARMUP = 2


def measure(scheduler: str, preset: str, episodes: int, seeds: int) -> dict:
    """Train in this process; returns wall times and the peak RSS."""
    from mecsim.backends.kernel.training import KernelTrainer
    from mecsim.config import Scenario

    trainer = KernelTrainer(Scenario(preset=preset), scheduler, list(range(seeds)))
    started = time.perf_counter()
    trainer.run(WARMUP, timing=False)
    compiled = time.perf_counter() - started
    tables = trainer.run(episodes - WARMUP, first_episode=WARMUP, timing=False)
    total = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    last = [float(t["mean_makespan"].tail(50).mean()) for t in tables]
    return {"total_s": total, "compile_s": compiled, "peak_rss_mib": peak, "last50": last}


def noise_share(scheduler: str, preset: str, rounds: int = 6, block: int = 3) -> dict:
    """Seconds per training episode with the chains' Gaussian draws and without (``chain_noise = 0``),
    alternating blocks of ``block`` episodes in one process (this machine's speed drifts by tens of
    per cent between runs), after 8 warm-up episodes that fill the replay buffers."""
    import numpy as np

    from mecsim.backends.kernel.training import KernelTrainer
    from mecsim.config import Scenario

    scenario = Scenario(preset=preset)
    trainers = {
        "noise": KernelTrainer(scenario, scheduler, [0]),
        "no_noise": KernelTrainer(scenario, scheduler, [0], options={"chain_noise": 0.0}),
    }
    warmup = 8
    for trainer in trainers.values():
        trainer.run(warmup, timing=False)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for r in range(rounds):
        for name in list(trainers)[:: 1 if r % 2 == 0 else -1]:
            started = time.perf_counter()
            trainers[name].run(block, first_episode=warmup + r * block, timing=False)
            times[name].append((time.perf_counter() - started) / block)
    ratios = np.array(times["no_noise"]) / np.array(times["noise"])
    return {name: float(np.median(t)) for name, t in times.items()} | {"share": 1 - float(np.median(ratios))}


# `paper`'s default point and `ddrl-amsa` method (the scenario `measure` builds), with these seeds and episodes
SWEEP_EXPERIMENT = """
extends = "{paper}"
name = "bench-ddrl-amsa"
[run]
seeds = {seeds}
eval_episodes = 0
[methods.ddrl-amsa]
episodes = {episodes}
[[sweep]]
name = "default"
methods = ["ddrl-amsa"]
presets = ["own"]
"""


def through_sweep(episodes: int, seeds: int) -> dict:
    """Train ``seeds`` seeds of `ddrl-amsa` as the cells of a sweep on a fresh default local cluster; returns
    the wall time (cluster start-up included) and the largest worker's peak RSS."""
    import tempfile
    from pathlib import Path

    from mecsim.sweep import run_sweep
    from mecsim.sweep.driver import dask_client

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-ddrl-amsa.toml"
        paper = Path(__file__).resolve().parents[1] / "experiments" / "paper.toml"
        path.write_text(SWEEP_EXPERIMENT.format(paper=paper, seeds=list(range(seeds)), episodes=episodes))
        started = time.perf_counter()
        with dask_client() as client:
            report = run_sweep(
                path, results_dir=Path(tmp) / "results", client=client, progress=False, echo=lambda *_: None
            )
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        total = time.perf_counter() - started
    if not report.ok or len(report.computed) != seeds:
        raise SystemExit(f"the benchmark sweep did not compute its {seeds} cells: {report}")
    return {"total_s": total, "peak_rss_mib": max(peaks.values()), "workers": len(peaks)}


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def cpu_per_episode(scheduler: str, preset: str, episodes: int) -> float:
    """CPU seconds per training episode of ours (after a warm-up of `WARMUP` episodes), in this process."""
    from mecsim.backends.kernel.training import KernelTrainer
    from mecsim.config import Scenario

    trainer = KernelTrainer(Scenario(preset=preset), scheduler, [0])
    trainer.run(WARMUP, timing=False)
    before = cpu_seconds(resource.RUSAGE_SELF)
    trainer.run(episodes, first_episode=WARMUP, timing=False)
    return (cpu_seconds(resource.RUSAGE_SELF) - before) / episodes


def reference_cpu_per_episode(checkout: str, python: str, episodes: int) -> float:
    """CPU seconds per episode of the reference's LAD-TS (its main_lad.py with the episode count set to
    ``episodes``; start-up included, so a slight over-estimate)."""
    import re
    import shutil
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("main_lad.py", "model_lad.py", "diffusion_lad.py", "environment_lad.py", "helpers.py"):
            shutil.copy(Path(checkout) / name, tmp)
        main = Path(tmp) / "main_lad.py"
        text, n = re.subn(r"episodes = 500", f"episodes = {episodes}", main.read_text())
        if n != 1:
            raise SystemExit(
                f"{checkout}/main_lad.py: no 'episodes = 500' line to set; is it ChangfuXu/DEdgeAI?"
            )
        main.write_text(text)
        (Path(tmp) / "results").mkdir()
        before = cpu_seconds(resource.RUSAGE_CHILDREN)
        subprocess.run([python, "main_lad.py"], cwd=tmp, check=True, capture_output=True)
    return (cpu_seconds(resource.RUSAGE_CHILDREN) - before) / episodes


def in_subprocess(scheduler: str, preset: str, episodes: int, seeds: int) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); from ddrl import measure; "
        f"print(json.dumps(measure({scheduler!r}, {preset!r}, {episodes}, {seeds})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument(
        "--only", choices=["lad", "amsa", "seeds", "sweep", "noise", "reference"], default=None
    )
    parser.add_argument("--reference", default=None, help="a checkout of ChangfuXu/DEdgeAI")
    parser.add_argument("--reference-python", default=None, help="a Python interpreter with PyTorch")
    parser.add_argument("--reference-episodes", type=int, default=3)
    args = parser.parse_args()
    if args.only == "reference" and not (args.reference and args.reference_python):
        parser.error("--only reference needs --reference DIR and --reference-python PY")
    if args.episodes <= WARMUP:
        parser.error(
            f"--episodes must be more than the {WARMUP} compiled warm-up episodes, got {args.episodes}"
        )
    e = args.episodes
    if args.only in (None, "lad"):
        lad = in_subprocess("ddrl-ats", "dedgeai", e, 1)
        print(f"lad_ts_train_{e}ep_s: {lad['total_s']:.1f}")
        print(f"lad_ts_compile_s: {lad['compile_s']:.1f}")
        print(f"lad_ts_peak_rss_mib: {lad['peak_rss_mib']:.0f}")
        print(f"lad_ts_last50_mean_delay_s: {lad['last50'][0]:.3f}")
    if args.only in (None, "amsa", "seeds", "sweep"):
        one = in_subprocess("ddrl-amsa", "amcoedge", e, 1)
        print(f"ddrl_amsa_train_{e}ep_s: {one['total_s']:.1f}")
        print(f"ddrl_amsa_compile_s: {one['compile_s']:.1f}")
        print(f"ddrl_amsa_peak_rss_mib: {one['peak_rss_mib']:.0f}")
        print(f"ddrl_amsa_last50_makespan_s: {one['last50'][0]:.4f}")
        if args.only in (None, "seeds"):
            eight = in_subprocess("ddrl-amsa", "amcoedge", e, 8)
            print(f"ddrl_amsa_8seeds_train_{e}ep_s: {eight['total_s']:.1f}")
            print(f"ddrl_amsa_8seeds_over_1seed: {eight['total_s'] / one['total_s']:.2f}")
            print(f"ddrl_amsa_8seeds_peak_rss_mib: {eight['peak_rss_mib']:.0f}")
        if args.only in (None, "sweep"):
            alone = through_sweep(e, 1)
            print(f"ddrl_amsa_1seed_sweep_train_{e}ep_s: {alone['total_s']:.1f}")
            eight = through_sweep(e, 8)
            print(f"ddrl_amsa_8seeds_sweep_train_{e}ep_s: {eight['total_s']:.1f}")
            print(f"ddrl_amsa_8seeds_sweep_workers: {eight['workers']}")
            print(f"ddrl_amsa_8seeds_sweep_peak_rss_mib_per_worker: {eight['peak_rss_mib']:.0f}")
            fastest_one = min(one["total_s"], alone["total_s"])
            print(f"ddrl_amsa_8seeds_sweep_over_1seed: {eight['total_s'] / fastest_one:.2f}")
    if args.only == "noise":
        for name, scheduler, preset in (
            ("ddrl_amsa", "ddrl-amsa", "amcoedge"),
            ("lad_ts", "ddrl-ats", "dedgeai"),
        ):
            share = noise_share(scheduler, preset)
            print(f"{name}_s_per_episode: {share['noise']:.3f}")
            print(f"{name}_no_chain_noise_s_per_episode: {share['no_noise']:.3f}")
            print(f"{name}_chain_noise_share: {share['share']:.2f}")
        return
    if args.reference and args.reference_python and args.only in (None, "reference"):
        ref = reference_cpu_per_episode(args.reference, args.reference_python, args.reference_episodes)
        ours = cpu_per_episode("ddrl-ats", "dedgeai", 10)
        print(f"reference_lad_ts_cpu_s_per_episode: {ref:.1f}")
        print(f"lad_ts_cpu_s_per_episode: {ours:.2f}")
        print(f"reference_over_ours_cpu: {ref / ours:.0f}")
    else:
        print("reference_lad_ts: not timed (give --reference DIR --reference-python PY)")


if __name__ == "__main__":
    main()
