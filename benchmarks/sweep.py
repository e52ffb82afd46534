"""Wall time and peak memory of a whole experiment from a fresh clone, as a newcomer runs it.

Prints ``name: value`` lines. Usage::

    python benchmarks/sweep.py                      # `make sweep` (the `paper` experiment)
    python benchmarks/sweep.py --experiment quick   # `mecsim sweep quick && mecsim plot quick`

It clones this repository's committed HEAD into a temporary folder, removes the experiment's committed
results there (so every cell is computed), and runs the commands with an empty JAX compilation cache.
The wall time includes the `.venv` bootstrap (pip, from the package registry or its local cache) and the
figures. Peak memory is sampled every half second over the whole process tree (the driver, the Dask
workers and their children): the largest sum, and the largest single process. The clone is removed
afterwards unless ``--keep``. The machine's speed on a fixed workload (`machine_speed`) is printed before
the run (``*_before``) and after it (``*_after``): compare runs of different days through it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from machine_speed import measure, print_figures

ROOT = Path(__file__).resolve().parents[1]


def commands(experiment: str) -> list[list[str]]:
    if experiment == "paper":
        return [["make", "sweep"]]
    return [
        ["make", ".venv"],
        [".venv/bin/mecsim", "sweep", experiment],
        [".venv/bin/mecsim", "plot", experiment],
    ]


class TreeMemory:
    """Samples the resident memory of a process and all its descendants until stopped."""

    def __init__(self, pid: int, every: float = 0.5):
        self.pid, self.every = pid, every
        self.peak_sum = self.peak_one = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                rss = [p.memory_info().rss for p in [root, *root.children(recursive=True)]]
            except psutil.Error:  # a process ended between listing and reading
                rss = []
            if rss:
                self.peak_sum = max(self.peak_sum, sum(rss))
                self.peak_one = max(self.peak_one, max(rss))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment", default="paper", help="an experiment of experiments/ (default: paper)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the clone (its results and its .venv)")
    parser.add_argument("--log", type=Path, help="write the commands' output here (default: discarded)")
    args = parser.parse_args()
    if not (ROOT / "experiments" / f"{args.experiment}.toml").is_file():
        parser.error(f"--experiment {args.experiment!r}: no experiments/{args.experiment}.toml")

    speed_before = measure()
    clone = Path(tempfile.mkdtemp(prefix="mecsim-fresh-"))
    log = open(args.log, "w") if args.log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone / "repo")], check=True)
        repo = clone / "repo"
        shutil.rmtree(repo / "results" / args.experiment, ignore_errors=True)
        env = {**os.environ, "MECSIM_JAX_CACHE": str(clone / "jax-cache")}
        started = time.perf_counter()
        peak_sum = peak_one = 0
        for command in commands(args.experiment):
            proc = subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
            memory = TreeMemory(proc.pid)
            code = proc.wait()
            memory.stop()
            peak_sum, peak_one = max(peak_sum, memory.peak_sum), max(peak_one, memory.peak_one)
            if code != 0:
                print(f"{' '.join(command)} failed with exit status {code}", file=sys.stderr)
                return code
        wall = time.perf_counter() - started
        parts = len(list((repo / "results" / args.experiment).glob("part-*.parquet")))
    finally:
        if args.log:
            log.close()
        if args.keep:
            print(f"clone kept: {clone}", file=sys.stderr)
        else:
            shutil.rmtree(clone, ignore_errors=True)
    name = args.experiment.replace("-", "_")
    print(f"sweep_{name}_cells: {parts}")
    print(f"sweep_{name}_fresh_clone_wall_s: {wall:.0f}")
    print(f"sweep_{name}_peak_rss_tree_gb: {peak_sum / 2**30:.2f}")
    print(f"sweep_{name}_peak_rss_one_process_gb: {peak_one / 2**30:.2f}")
    print(f"cpu_count: {os.cpu_count()}")
    print_figures(speed_before, "_before")
    print_figures(measure(), "_after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
