"""The client side of a prototype run: connect, set the service up, replay traces under each scheduler.

Runs where the scheduler is reachable — inside the control namespace on one machine
(``ip netns exec mecsim-ctl python -m mecsim.prototype.driver SPEC``), or anywhere for a real
cluster — and writes its tables into the spec's ``out`` folder: ``runs-tasks.parquet`` (one row per
task, the simulator's columns plus the measured phases), ``runs-subtasks.parquet``,
``runs-episodes.parquet``, and ``repair-sample.npz`` (inputs and outputs of a few real repairs).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Scenario
from ..plugins import call_hook, make_scheduler
from ..results import write_parquet, write_text
from ..scheduling import hook
from ..streams import stream
from ..tasklog import TaskLog, episode_metrics
from . import service
from .calibrate import calibrate, calibrated_values
from .config import PrototypeConfig
from .errors import PrototypeError
from .live import LiveModel
from .phases import subtask_phases, task_phases
from .requests import requests_of, sim_scenario
from .service import RepairService


def connect(spec: dict):
    from distributed import Client

    config = PrototypeConfig.model_validate(spec["config"])
    target, timeout = spec["scheduler_file"], spec.get("connect_timeout_s", 60)
    if "://" in target:  # a cluster started elsewhere, by its scheduler's address
        client = Client(target, timeout=timeout)
    else:
        client = Client(scheduler_file=target, timeout=timeout)
    client.wait_for_workers(config.n_es, timeout=timeout)
    names = sorted(str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values())
    expected = [f"ES{i}" for i in range(config.n_es)]
    if names != expected:
        raise PrototypeError(
            f"the cluster's workers are {names}; the scenario has n_bs = {config.n_es} ({expected})"
        )
    slowdown = None
    if spec["mode"] == "loopback":  # no CPU quotas: emulate each ES's share by a labelled slowdown
        slowdown = {f"ES{i}": f for i, f in enumerate(config.scenario.capacities)}  # checked <= 1 core
    svc = config.service
    client.register_plugin(RepairService(svc.max_images, svc.step_choices, slowdown))
    warm_up(client, config)
    client.get_task_stream()  # installs the task-stream recorder before any measured task
    return config, client


def warm_up(client, config: PrototypeConfig) -> None:
    """One small request over every BS -> ES pair, unrecorded: first calls and first connections cost more."""
    svc = config.service
    chains = [
        service.submit_subbatch(client, b, i, 0, 0, 1, svc.step_choices[0], svc.mask)
        for b in range(config.n_es)
        for i in range(config.n_es)
    ]
    client.gather([fetched for _, _, fetched in chains])


def run_one(
    config, client, scenario: Scenario, name: str, scheduler, seed: int, requests, tag: str, kill=None
):
    """One episode of ``seed``'s requests under one scheduler; returns (tasks, subtasks, metrics, model)."""
    trace = requests.trace(config)
    log = TaskLog(scenario, trace, 0)
    model = LiveModel(config, scenario, scheduler, client, requests, tag)
    model.run(trace, log, kill=kill)
    stream_records = client.get_task_stream(start=model.clock0 - 1.0)
    arrivals = {k: model.clock0 + float(log.arrival[k]) for k in range(len(log))}
    subtasks = subtask_phases(stream_records, model.subtasks, arrivals)
    tasks = log.frame(scheduler=name, seed=seed)
    tasks["images"] = model.images
    tasks["steps"] = model.steps
    tasks["decided_fractions"] = list(model.decided_fractions)
    tasks["estimate"] = model.estimate
    tasks["decision_delay_s"] = model.decision_wall - (model.clock0 + log.arrival)
    tasks["error"] = model.error
    tasks["redispatches"] = model.task_redispatches
    tasks = pd.concat([tasks, task_phases(subtasks, len(log))], axis=1)
    subtasks.insert(0, "scheduler", name)
    subtasks.insert(1, "seed", seed)
    horizon = scenario.decision_slots * scenario.slot_length
    metrics = episode_metrics(log, model.served, np.asarray(scenario.capacities), horizon)
    metrics.update(
        scheduler=name,
        seed=seed,
        redispatched=model.redispatched,
        n_errors=int((tasks["error"].notna()).sum()),
    )
    return tasks, subtasks, metrics, model


def build_scheduler(name: str, scenario: Scenario, seed: int, checkpoint: str | None):
    scheduler = make_scheduler(name, scenario, rng=stream(seed, "scheduler"))
    if checkpoint:
        call_hook(scheduler, "load", checkpoint)
    call_hook(scheduler, "train", False)
    return scheduler


def warm_scheduler(scenario: Scenario, scheduler, trace) -> None:
    """A learner decides once in the simulator on the run's trace first: its compiled decision functions
    (one per number of tasks in a slot) are then built before the timed run, not inside it."""
    if hook(scheduler, "save") is None:
        return  # not a learner: nothing to compile, and its random state stays that of a fresh one
    from ..engine import Simulation

    Simulation(scenario, scheduler).run_episode(0, trace=trace)


def sample_repairs(client, model: LiveModel, count: int = 8) -> dict:
    """Inputs and outputs of up to ``count`` images repaired in this run (fetched from the workers)."""
    done = [s for s in model.subtasks if s.end is not None][:count]
    originals, masks, repaired = [], [], []
    for sub in done:
        part, rep, _ = sub.futures
        p, r = client.gather([part, rep])
        originals.append(p["images"])
        masks.append(p["mask"])
        repaired.append(r["images"])
    if not done:
        return {}
    cat = lambda xs: np.concatenate(xs)[:count]  # noqa: E731
    return {
        "original": cat(originals) / 255.0,
        "mask": cat(masks).astype(float),
        "repaired": cat(repaired) / 255.0,
    }


def learner_checkpoints(spec: dict, scenario: Scenario, out: Path) -> dict[str, str]:
    """Checkpoints for the learning schedulers: given ones, else trained now in the simulator (event model)."""
    from ..plugins import resolve_scheduler
    from ..training import train

    checkpoints = dict(spec["checkpoints"])
    for name in spec["schedulers"]:
        if name in checkpoints or hook(resolve_scheduler(name), "save") is None:
            continue
        started = time.time()
        result = train(scenario, name, spec["train_episodes"], out_dir=out / "checkpoints" / name, eval_episodes=0,
                       progress=False, engine="python")  # fmt: skip
        checkpoints[name] = str(result.checkpoint)
        print(f"{name}: trained {spec['train_episodes']} episodes in the simulator ({time.time() - started:.0f} s), "
              f"online make-span (last 20) {result.online_mean(20):.3f} s", flush=True)  # fmt: skip
    return checkpoints


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    config, client = connect(spec)
    tasks, subtasks, episodes = [], [], []
    sample = {}
    try:
        calibration = spec.get("calibration")
        if calibration is None:
            started = time.time()
            calibration = calibrate(client, config, repeats=spec["calibration_repeats"])
            write_text(out / "calibration.json", json.dumps(calibration, indent=1))
            if spec.get("calibrate_only"):
                return 0
            print(f"calibrated in {time.time() - started:.0f} s: capacities "
                  f"{[round(r['capacity'], 3) for r in calibration['compute']]} cores, rates "
                  f"{[round(r['rate'], 4) for r in calibration['links']]} Mbit/s", flush=True)  # fmt: skip
        # what schedulers are told, and what the simulator is given: the calibrated system
        scenario = sim_scenario(config, *calibrated_values(calibration, config))
        checkpoints = learner_checkpoints(spec, scenario, out)
        # for the comparison, relative to the run's folder so that it moves with it
        relative = {name: os.path.relpath(path, out) for name, path in checkpoints.items()}
        write_text(out / "checkpoints.json", json.dumps(relative, indent=1))
        runs = [(rep, name) for rep in range(spec["repetitions"]) for name in spec["schedulers"]]
        for n, (rep, name) in enumerate(runs):
            seed = spec["seed"] + rep
            scheduler = build_scheduler(name, scenario, seed, checkpoints.get(name))
            requests = requests_of(config, seed)
            warm_scheduler(scenario, scheduler, requests.trace(config))
            kill = None
            if spec.get("kill") and n == len(runs) - 1:
                kill = (spec["kill"]["es"], spec["kill"]["at_s"], spec["kill"]["pid"])
            started = time.time()
            t, s, m, model = run_one(
                config, client, scenario, name, scheduler, seed, requests, f"r{rep}-{name}", kill
            )
            m["repetition"], t["repetition"], s["repetition"] = rep, rep, rep
            m["killed_es"] = kill[0] if kill is not None else -1
            tasks.append(t)
            subtasks.append(s)
            episodes.append(m)
            if not sample:
                sample = sample_repairs(client, model)
            model.release()
            print(
                f"[{n + 1}/{len(runs)}] {name} seed {seed}: {m['n_tasks']} tasks, mean make-span "
                f"{m['mean_makespan']:.3f} s, p95 {m['p95_latency']:.3f} s, failed {m['failure_rate']:.0%}, "
                f"re-dispatched {m['redispatched']} ({time.time() - started:.0f} s)",
                flush=True,
            )
            time.sleep(spec.get("pause_s", 1.0))  # let the workers drain between runs
    finally:
        client.close()
    if not tasks:
        return 0
    write_parquet(pd.concat(tasks, ignore_index=True), out / "runs-tasks.parquet")
    write_parquet(pd.concat(subtasks, ignore_index=True), out / "runs-subtasks.parquet")
    write_parquet(pd.DataFrame(episodes), out / "runs-episodes.parquet")
    if sample:
        np.savez_compressed(out / "repair-sample.npz", **sample)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
