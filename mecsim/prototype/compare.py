"""Does the simulator predict the prototype? The same traces through the event model, and the comparison.

For every (scheduler, seed) the prototype ran, the event model runs the same realised trace with
the calibrated scenario twice:

* **replay** — each task split exactly as the prototype split it (its realised fractions), so any
  difference is the model's physics: per-task make-span error (MAPE) and mean error;
* **free** — the scheduler decides on the model's own state, as in any simulation: does the
  simulator rank the schedulers as the prototype does (Kendall τ of mean make-spans)?

The model's terms for the sub-batch that ended last (upload x·d/r_i, compute x·w/f_i, download
x·res/r_i, and what its make-span leaves for waiting) are set beside the measured phases, to show
which phase the model gets wrong. A third replay uses capacities fitted on the runs' own compute
times (in sample): how much of the gap a calibration under load would close.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..engine import Simulation
from ..report.ddrl import bootstrap_interval
from .config import PrototypeConfig
from .driver import build_scheduler
from .requests import requests_of, sim_scenario

PAPER_CLAIM = (9.23, 31.98)
"""AMCoEdge's prototype: service delay 9.23-31.98 % lower than three representative methods."""


class Replay:
    """Splits every task as the prototype did (its realised fractions, by slot, BS and task slot)."""

    name = "replay"

    def __init__(self, fractions: dict[tuple[int, int, int], np.ndarray]):
        self.fractions = fractions

    def decide(self, obs) -> np.ndarray:
        return self.fractions[(obs.slot, obs.bs, obs.task)]


def run_capacities(config: PrototypeConfig, subtasks: pd.DataFrame) -> list[float]:
    """Each ES's capacity as the runs' own sub-batches give it, in sample: their total compute time over their
    images·steps (a per-request cost spread over the work, as the model can only take it), which is what a
    calibration under the load of the runs would give."""
    caps = []
    for i in range(config.n_es):
        g = subtasks[subtasks["es"] == i]
        per_image_step = g["compute"].sum() / (g["images"] * g["steps"]).sum()
        caps.append(config.service.seconds_per_evaluation / per_image_step)
    return caps


def simulate(config, calibration_values, tasks: pd.DataFrame, checkpoints: dict, loaded_capacities=None):
    """Per task of the prototype's runs: its make-span in the model, replayed and free, and replayed with
    ``loaded_capacities`` (fitted on the runs, `run_capacities`) where given."""
    scenario = sim_scenario(config, *calibration_values)
    loaded = (
        None if loaded_capacities is None else sim_scenario(config, loaded_capacities, calibration_values[1])
    )
    frames = []
    for (name, seed), real in tasks.groupby(["scheduler", "seed"], sort=False):
        trace = requests_of(config, int(seed)).trace(config)
        keys = list(zip(real["slot"], real["bs"], real["task"]))
        replay = Replay({key: np.asarray(f, float) for key, f in zip(keys, real["fractions"])})
        replayed = Simulation(scenario, replay).run_episode(0, trace=trace).log
        scheduler = build_scheduler(name, scenario, int(seed), checkpoints.get(name))
        free = Simulation(scenario, scheduler).run_episode(0, trace=trace).log
        frame = pd.DataFrame({"scheduler": name, "seed": seed, "slot": replayed.slot, "bs": replayed.bs,
                              "task": replayed.task, "sim_replay_makespan": replayed.makespan,
                              "sim_replay_latency": replayed.latency, "sim_free_makespan": free.makespan})  # fmt: skip
        frame["sim_loaded_latency"] = (
            np.nan if loaded is None else Simulation(loaded, replay).run_episode(0, trace=trace).log.latency
        )
        frames.append(frame)
    sim = pd.concat(frames, ignore_index=True)
    return tasks.merge(sim, on=["scheduler", "seed", "slot", "bs", "task"], how="left", validate="one_to_one")


def model_phases(config: PrototypeConfig, calibration_values, tasks: pd.DataFrame) -> pd.DataFrame:
    """The model's upload, compute and download terms of each task's critical sub-batch (s)."""
    caps, rates = (np.asarray(v, float) for v in calibration_values)
    es = tasks["critical_es"].to_numpy()
    ok = np.isfinite(es)
    i = np.where(ok, es, 0).astype(int)
    share = np.array([f[j] for f, j in zip(tasks["fractions"], i)])
    images = tasks["images"].to_numpy() * share
    remote = i != tasks["bs"].to_numpy()
    work = images * tasks["steps"].to_numpy() * config.service.seconds_per_evaluation
    out = pd.DataFrame({
        "model_upload_s": np.where(remote, images * config.image_mbit / rates[i], 0.0),
        "model_compute_s": work / caps[i],
        "model_download_s": np.where(remote, images * config.result_mbit / rates[i], 0.0),
    })  # fmt: skip
    out[~ok] = np.nan
    # what the model leaves for waiting: its make-span less its terms (the critical ES taken as the prototype's)
    terms = out[["model_upload_s", "model_compute_s", "model_download_s"]].sum(axis=1)
    out["model_queueing_s"] = (tasks["sim_replay_latency"].to_numpy() - terms).clip(lower=0.0)
    return out


def sim_to_real(joined: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per scheduler and overall: mean make-spans (real, replay, free), per-task MAPE, mean error; Kendall τ."""
    from scipy import stats

    done = joined[
        joined["error"].isna() & np.isfinite(joined["latency"]) & np.isfinite(joined["sim_replay_latency"])
    ]
    ape = (done["sim_replay_latency"] - done["latency"]).abs() / done["latency"]
    rows = []
    for name, g in joined.groupby("scheduler", sort=False):
        rows.append({
            "scheduler": name,
            "real_mean_makespan": g["makespan"].mean(),
            "sim_replay_mean_makespan": g["sim_replay_makespan"].mean(),
            "sim_free_mean_makespan": g["sim_free_makespan"].mean(),
            "mean_error_replay": g["sim_replay_makespan"].mean() / g["makespan"].mean() - 1,
            "mean_error_free": g["sim_free_makespan"].mean() / g["makespan"].mean() - 1,
            "task_mape_replay": float(ape[done["scheduler"] == name].mean()),
            "sim_loaded_mean_latency": g["sim_loaded_latency"].mean(),
            "real_mean_latency": g["latency"].mean(),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    tau = stats.kendalltau(table["real_mean_makespan"], table["sim_free_mean_makespan"]).statistic
    loaded_ape = (done["sim_loaded_latency"] - done["latency"]).abs() / done["latency"]
    overall = {
        "task_mape_replay": float(ape.mean()),
        "task_mape_loaded": float(loaded_ape.mean()),
        "mean_error_loaded": float(done["sim_loaded_latency"].mean() / done["latency"].mean() - 1),
        "mean_error_replay": float(joined["sim_replay_makespan"].mean() / joined["makespan"].mean() - 1),
        "mean_error_free": float(joined["sim_free_makespan"].mean() / joined["makespan"].mean() - 1),
        "kendall_tau": float(tau) if np.isfinite(tau) else float("nan"),
        "same_ranking": bool(
            list(table.sort_values("real_mean_makespan")["scheduler"])
            == list(table.sort_values("sim_free_mean_makespan")["scheduler"])
        ),
    }
    return table, overall


def scheduler_table(episodes: pd.DataFrame) -> pd.DataFrame:
    """Per scheduler over repetitions: mean and p95 make-span with 95 % BCa bootstrap intervals."""
    rows = []
    for name, g in episodes.groupby("scheduler", sort=False):
        row = {"scheduler": name, "runs": len(g)}
        for col, label in (("mean_makespan", "mean"), ("p95_latency", "p95"), ("failure_rate", "failed")):
            lo, hi = bootstrap_interval(g[col])
            row.update({label: g[col].mean(), f"{label}_lo": lo, f"{label}_hi": hi})
        row["redispatched"] = int(g["redispatched"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def paired_reductions(episodes: pd.DataFrame, method: str = "amcoedge") -> pd.DataFrame:
    """1 − method/baseline of the mean make-span, paired by seed, with a bootstrap interval."""
    wide = episodes.pivot_table(index="seed", columns="scheduler", values="mean_makespan")
    if method not in wide:
        return pd.DataFrame()
    rows = []
    for base in wide.columns.drop(method):
        red = 1 - wide[method] / wide[base]
        lo, hi = bootstrap_interval(red)
        rows.append({"baseline": base, "reduction": red.mean(), "lo": lo, "hi": hi,
                     "seeds_won": int((red > 0).sum()), "seeds": int(red.notna().sum())})  # fmt: skip
    return pd.DataFrame(rows)
