"""How fast this machine is right now, on a fixed workload, so that timings from different days can be compared.

On the 2-core machines these figures come from, the same run has taken up to twice as long from one day to the
next (docs/speed.md), so a wall time alone cannot say whether a change or the machine made a run faster. Print
these figures beside a benchmark's own (``benchmarks/sweep.py`` does, before and after its run) and compare
ratios to them, not raw seconds, across days.

Prints ``name: value`` lines. Usage: ``python benchmarks/machine_speed.py``.

- ``machine_python_loop_s``: a plain Python loop of 10^7 additions, best of 3.
- ``machine_amcoedge_x24_episode_ms_median`` / ``_min``: one AMCoEdge training episode on the compiled kernel,
  24 replicas (the slotted default point, seeds 0-23), timed one episode at a time after the first update, in
  a child process as a sweep worker runs it: one XLA thread, pinned to one core.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

WARM_EPISODES = 5  # compile, then past `learn_start` (200 slots of 60), so that the timed episodes update
TIMED_EPISODES = 6


def python_loop_seconds() -> float:
    def loop() -> float:
        started, total = time.perf_counter(), 0
        for i in range(10**7):
            total += i
        return time.perf_counter() - started

    return min(loop() for _ in range(3))


def amcoedge_episode_seconds() -> list[float]:
    """Run in the child: the timed episodes' seconds."""
    from mecsim.sweep.pinning import pin_to_core
    from mecsim.sweep.worker import limit_threads

    limit_threads()  # before JAX initialises
    pin_to_core(0)
    from mecsim.backends.kernel.training import KernelTrainer
    from mecsim.config import Scenario

    trainer = KernelTrainer(Scenario(preset="amcoedge"), "amcoedge", list(range(24)))
    trainer.run(WARM_EPISODES, timing=False)
    seconds = []
    for episode in range(WARM_EPISODES, WARM_EPISODES + TIMED_EPISODES):
        started = time.perf_counter()
        trainer.run(1, first_episode=episode, timing=False)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure() -> dict[str, float]:
    """The figures, the kernel's from a child process (its thread settings and pinning stay there)."""
    child = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"the calibration run failed:\n{child.stderr[-2000:]}")
    episodes = [float(s) for s in child.stdout.split()]
    return {
        "machine_python_loop_s": python_loop_seconds(),
        "machine_amcoedge_x24_episode_ms_median": 1000 * statistics.median(episodes),
        "machine_amcoedge_x24_episode_ms_min": 1000 * min(episodes),
    }


def print_figures(figures: dict[str, float], suffix: str = "") -> None:
    """Print ``name: value`` lines (three decimals below 100, none above), as every benchmark here does."""
    for name, value in figures.items():
        print(f"{name}{suffix}: {value:.3f}" if value < 100 else f"{name}{suffix}: {value:.0f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        print(" ".join(f"{s:.6f}" for s in amcoedge_episode_seconds()))
    else:
        print_figures(measure())
