"""Training speed and peak memory of the soft actor-critic schedulers on the compiled kernel.

Prints ``name: value`` lines:

* ``lad_ts_train_<E>ep_s`` — LAD-TS (`ddrl-ats`), E online episodes of the DEdgeAI scenario, one seed;
* ``ddrl_amsa_train_<E>ep_s`` — `ddrl-amsa`, E episodes at the AMCoEdge default point, one seed;
* ``ddrl_amsa_8seeds_over_1seed`` — wall time of 8 seeds trained at once over that of one seed;
* ``*_peak_rss_mib`` — the peak resident memory of each run's process.

Each run is its own process (so its peak memory is its own) and includes compilation; the
first two episodes are timed apart as ``*_compile_s``. Usage:
``python benchmarks/ddrl.py [--episodes 500] [--only lad|amsa|seeds]``.
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
    parser.add_argument("--only", choices=["lad", "amsa", "seeds"], default=None)
    args = parser.parse_args()
    e = args.episodes
    if args.only in (None, "lad"):
        lad = in_subprocess("ddrl-ats", "dedgeai", e, 1)
        print(f"lad_ts_train_{e}ep_s: {lad['total_s']:.1f}")
        print(f"lad_ts_compile_s: {lad['compile_s']:.1f}")
        print(f"lad_ts_peak_rss_mib: {lad['peak_rss_mib']:.0f}")
        print(f"lad_ts_last50_mean_delay_s: {lad['last50'][0]:.3f}")
    if args.only in (None, "amsa", "seeds"):
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
    print("reference_lad_ts: not timed (PyTorch is not installed on this machine)")


if __name__ == "__main__":
    main()
