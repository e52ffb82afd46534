"""``mecsim prototype``: bring the prototype up and down, run schedulers on it, compare it with the simulator."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from . import cluster, fabric
from .config import PrototypeConfig, load
from .errors import PrototypeError

DEFAULT_SCHEDULERS = (
    "random",
    "local",
    "best-single",
    "optimal",
    "smcoedge",
    "drlcoedge",
    "ddrl-amsa",
    "amcoedge",
)
"""AMCoEdge last (a --kill-worker run hits it), after the paper's three representative methods
(RandCoEdge = random, SMCoEdge, DRLCoEdge), the diffusion-policy DDRL-AMSA and the references."""
QUICK = {"scenario.slots": 4}


def default_config() -> Path:
    from ..sweep.schema import experiments_dirs

    for directory in experiments_dirs():
        path = directory / "prototype" / "default.toml"
        if path.is_file():
            return path
    raise PrototypeError("no experiments/prototype/default.toml here or in the source tree; give --config")


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="prototype TOML (default: experiments/prototype/default.toml)")  # fmt: skip
set_option = click.option("--set", "sets", multiple=True, metavar="TABLE.KEY=VALUE",
                          help="override, e.g. scenario.slots=6 or network.mode=loopback")  # fmt: skip


def _config(config_path, sets, extra=None) -> PrototypeConfig:
    from ..config import parse_assignment

    overrides = {**(extra or {}), **dict(parse_assignment(a) for a in sets)}
    return load(config_path or default_config(), overrides)


@click.group("prototype")
def prototype() -> None:
    """The distributed prototype: ESs as Dask workers behind emulated links, running the repair service."""


@prototype.command("up")
@config_option
@set_option
def up_command(config_path, sets) -> None:
    """Build the emulated network and start the scheduler and one worker per ES (idempotent)."""
    config = _config(config_path, sets)
    state = cluster.running_state()
    if state is not None:
        click.echo(f"prototype already up ({state.mode} mode, {state.n_es} ESs); nothing changed")
        return
    with _cleanup_on_signals():
        cluster.up(config, echo=click.echo)


@prototype.command("down")
def down_command() -> None:
    """Stop every prototype process and remove its namespaces and CPU groups (idempotent)."""
    cluster.down(echo=click.echo)


@prototype.command("run")
@config_option
@set_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option(
    "--quick", is_flag=True, help="a few dozen tasks: 3 slots, 1 repetition, short training (a smoke run)"
)
@click.option("--schedulers", default=",".join(DEFAULT_SCHEDULERS), show_default=True, help="comma-separated")
@click.option(
    "--repetitions", type=click.IntRange(min=1), default=None, help="seeds per scheduler [5; quick: 1]"
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="first seed")
@click.option("--train-episodes", type=click.IntRange(min=1), default=None,
              help="simulator episodes to train a learner without --checkpoint [300; quick: 20]")  # fmt: skip
@click.option(
    "--checkpoint", "checkpoints", multiple=True, metavar="NAME=DIR", help="a trained learner's checkpoint"
)
@click.option("--calibration", type=click.Path(dir_okay=False, exists=True), default=None,
              help="calibration.json of an earlier run (default: measure now)")  # fmt: skip
@click.option("--kill-worker", default=None, metavar="ES<i>", help="SIGKILL this worker during the last run")
@click.option(
    "--kill-at", type=click.FloatRange(min=0), default=5.0, show_default=True, help="seconds into that run"
)
@click.option("--scheduler-address", "scheduler_address", default=None, metavar="ADDRESS|FILE",
              help="a running Dask cluster (workers named ES0..ES<B-1> with resources ES<i>=1): its scheduler's "
                   "address (tcp://host:port) or scheduler file; nothing is started here")  # fmt: skip
@click.option("--force", is_flag=True, help="write into a non-empty --out")
def run_command(config_path, sets, out, quick, schedulers, repetitions, seed, train_episodes, checkpoints,
                calibration, kill_worker, kill_at, scheduler_address, force) -> None:  # fmt: skip
    """Run schedulers on the prototype over the same traces; compare with the event model; write OUT/."""
    from ..plugins import resolve_scheduler
    from ..results import prepare_output, write_text
    from .report import summarise

    config = _config(config_path, sets, QUICK if quick else None)
    names = [s.strip() for s in schedulers.split(",") if s.strip()]
    for name in names:
        resolve_scheduler(name)  # an unknown name fails here, naming it and the known ones
    ckpt = {}
    for item in checkpoints:
        name, sep, path = item.partition("=")
        if not sep or name not in names or not Path(path).is_dir():
            raise PrototypeError(
                f"--checkpoint {item!r}: give NAME=DIR with NAME one of {names} and DIR a checkpoint folder"
            )
        ckpt[name] = str(Path(path).resolve())
    out = prepare_output(out, "--out", force=force, directory=True).resolve()
    spec = {
        "config": config.model_dump(mode="json"), "schedulers": names, "checkpoints": ckpt, "seed": seed,
        "repetitions": repetitions or (1 if quick else 5), "train_episodes": train_episodes or (20 if quick else 300),
        "calibration_repeats": 1 if quick else 3, "out": str(out),
        "calibration": _read_calibration(calibration, config) if calibration else None,
    }  # fmt: skip
    if calibration:
        write_text(out / "calibration.json", Path(calibration).read_text())
    started = time.time()
    with _cleanup_on_signals():
        state, owned = _cluster_for(config, scheduler_address)
        try:
            spec["scheduler_file"], spec["mode"] = state.scheduler_file, state.mode
            if kill_worker is not None:
                if kill_worker not in state.pids:
                    raise PrototypeError(f"--kill-worker {kill_worker!r}: the workers here are "
                                         f"{sorted(k for k in state.pids if k.startswith('ES'))}")  # fmt: skip
                spec["kill"] = {"es": int(kill_worker[2:]), "at_s": kill_at, "pid": state.pids[kill_worker]}
            provenance = _provenance(config, state)
            _drive(state, spec, out)
        finally:
            if owned:
                cluster.down(echo=click.echo)
    provenance["wall_s"] = round(time.time() - started, 1)
    text = summarise(out, config, provenance)
    click.echo("\n".join(line for line in text.splitlines() if line.startswith("- ")))
    click.echo(f"-> {out}/summary.md, tasks.parquet, episodes.parquet, prototype.png, grid.png")


@prototype.command("calibrate")
@config_option
@set_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="folder for calibration.json, calibrated.toml",
)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--scheduler-address", "scheduler_address", default=None, metavar="ADDRESS|FILE",
              help="a running Dask cluster's scheduler address or scheduler file; nothing is started here")  # fmt: skip
@click.option("--force", is_flag=True, help="write into a non-empty --out")
def calibrate_command(config_path, sets, out, repeats, scheduler_address, force) -> None:
    """Measure each ES's compute speed and each link's rate; write the calibrated event-model scenario.

    OUT/calibrated.toml runs in the simulator as is: ``mecsim run --config OUT/calibrated.toml``.
    """
    import tomli_w

    from ..results import prepare_output, write_text
    from .calibrate import calibrated_values
    from .requests import sim_scenario

    config = _config(config_path, sets)
    out = prepare_output(out, "--out", force=force, directory=True).resolve()
    spec = {"config": config.model_dump(mode="json"), "schedulers": [], "checkpoints": {}, "seed": 0,
            "repetitions": 0, "train_episodes": 1, "calibration_repeats": repeats, "out": str(out),
            "calibration": None, "calibrate_only": True}  # fmt: skip
    with _cleanup_on_signals():
        state, owned = _cluster_for(config, scheduler_address)
        try:
            spec["scheduler_file"], spec["mode"] = state.scheduler_file, state.mode
            _drive(state, spec, out)
        finally:
            if owned:
                cluster.down(echo=click.echo)
    calibration = json.loads((out / "calibration.json").read_text())
    scenario = sim_scenario(config, *calibrated_values(calibration, config))
    header = f"# the prototype's event-model scenario, calibrated {time.strftime('%Y-%m-%d %H:%M')} ({state.mode} mode)\n"
    write_text(
        out / "calibrated.toml",
        header + tomli_w.dumps({"scenario": scenario.model_dump(mode="json", exclude_none=True)}),
    )
    for c, link in zip(calibration["compute"], calibration["links"]):
        click.echo(f"ES{c['es']}: capacity {c['capacity']:.3f} cores (nominal {c['nominal_capacity']:g}), "
                   f"link {link['rate']:.4f} Mbit/s (nominal {link['nominal_rate']:g})")  # fmt: skip
    click.echo(f"-> {out}/calibration.json, {out}/calibrated.toml")


def _read_calibration(path: str, config: PrototypeConfig) -> dict:
    """An earlier run's calibration.json, checked against this scenario's ESs."""
    try:
        calibration = json.loads(Path(path).read_text())
        n = {len(calibration["compute"]), len(calibration["links"])}
    except (ValueError, KeyError, TypeError) as err:
        raise PrototypeError(
            f"--calibration {path}: not a calibration.json of mecsim prototype ({err})"
        ) from None
    if n != {config.n_es}:
        raise PrototypeError(
            f"--calibration {path}: measured {sorted(n)} ESs but scenario.n_bs = {config.n_es}"
        )
    return calibration


def _drive(state, spec: dict, out: Path) -> None:
    """Run the driver where the scheduler is reachable (inside the control namespace on one machine)."""
    spec_path = out / ".spec.json"
    spec_path.write_text(json.dumps(spec))
    try:
        done = subprocess.run(cluster.driver_command(state) + ["mecsim.prototype.driver", str(spec_path)],
                              env=cluster.client_env())  # fmt: skip
    finally:
        spec_path.unlink(missing_ok=True)
    if done.returncode:
        raise PrototypeError(f"the dispatcher failed (exit {done.returncode}); its messages are above")


@prototype.command("report")
@click.argument("out", type=click.Path(file_okay=False, exists=True))
def report_command(out) -> None:
    """Redo the comparison and summary of a finished run folder (no cluster needed)."""
    from .report import summarise

    out = Path(out)
    provenance = json.loads((out / "provenance.json").read_text())
    config = PrototypeConfig.model_validate(provenance["config"])
    summarise(out, config, provenance)
    click.echo(f"-> {out}/summary.md")


def _cluster_for(config: PrototypeConfig, scheduler_address: str | None):
    """(state, whether this command owns it): a given cluster, the prototype already up, or a new one."""
    if scheduler_address:
        target = scheduler_address
        host = target.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        if "://" in target and _in_emulated_range(host):
            raise PrototypeError(
                f"--scheduler-address {target}: an address of the emulated network, which this (root) namespace "
                f"must not connect to; to use the prototype that is up, leave --scheduler-address out"
            )
        if "://" not in target:  # a scheduler file
            if not Path(target).is_file():
                raise PrototypeError(
                    f"--scheduler-address {target!r}: neither an address (tcp://host:port) nor a scheduler file"
                )
            target = str(Path(target).resolve())
        return cluster.State("remote", target, {}, config.n_es, time.time()), False
    state = cluster.running_state()
    if state is not None:
        if state.n_es != config.n_es:
            raise PrototypeError(
                f"the prototype that is up has {state.n_es} ESs but scenario.n_bs = {config.n_es}; "
                f"run `mecsim prototype down` first, or give a scenario with n_bs = {state.n_es}"
            )
        return state, False
    return cluster.up(config, echo=click.echo), True


def _in_emulated_range(host: str) -> bool:
    import ipaddress

    from .config import SAFE_NETWORK

    try:
        return ipaddress.ip_address(host) in SAFE_NETWORK
    except ValueError:
        return False


def _provenance(config: PrototypeConfig, state) -> dict:
    import dask
    import jax

    info = {
        "mode": state.mode, "why_loopback": state.why_loopback, "host": platform.node(), "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "dask": dask.__version__, "jax": jax.__version__,
        "command": " ".join(["mecsim"] + sys.argv[1:]), "config": config.model_dump(mode="json"),
    }  # fmt: skip
    if state.mode == "netns":
        info["links"] = [fabric.shaping(i) for i in range(config.n_es)]
        info["cpu_quota_us"] = [config.quota_us(i, fabric.PERIOD_US) for i in range(config.n_es)]
        info["cpu_period_us"] = fabric.PERIOD_US
    elif state.mode == "loopback":
        info["capacity_emulation"] = (
            "labelled slowdown: a worker sleeps (1/capacity - 1) x its compute; no shaping"
        )
    return info


class _cleanup_on_signals:
    """SIGTERM and SIGHUP end the command like Ctrl-C does, so that cleanup in ``finally`` runs."""

    def __enter__(self):
        self._old = {s: signal.signal(s, self._raise) for s in (signal.SIGTERM, signal.SIGHUP)}

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        return False
