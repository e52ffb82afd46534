"""Bring the prototype up and down: the emulated network, one Dask scheduler, one Dask worker per ES.

``up`` records what it started in a state file; ``down`` removes all of it (and whatever a
crashed run left: namespaces by prefix, the CPU groups, recorded processes). Both are idempotent.
The root process never connects to a namespace address: it learns that a worker joined from the
worker's own log, and clients run inside the control namespace (`netns_prefix`).

On a real cluster none of this runs: start ``dask worker ADDR --name ES<i> --resources ES<i>=1
--nthreads 2`` on each machine and give the scheduler's address to ``mecsim prototype run
--scheduler-address``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..jaxconfig import CACHE_ENV, compilation_cache_dir
from ..results import write_text
from . import fabric
from .config import PrototypeConfig
from .errors import PrototypeError
from .service import SHAPES_ENV, WORKER_ENV

DASK_ENV = {
    # a task pinned to a dead worker's resource fails after 5 s instead of waiting forever
    "DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT": "5s",
    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
    "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "60s",
    "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "30s",
}


SCHEDULER_START_S = 60.0


def state_dir() -> Path:
    return Path(
        os.environ.get(
            "MECSIM_PROTOTYPE_STATE", Path(tempfile.gettempdir()) / f"mecsim-prototype-{os.getuid()}"
        )
    )


@dataclass
class State:
    mode: str  # "netns" or "loopback"
    scheduler_file: str  # or, for a cluster started elsewhere ("remote"), its scheduler's address
    pids: dict[str, int]  # process name -> PID (its process group)
    n_es: int
    started: float
    why_loopback: str | None = None

    def prefix(self, node: str) -> list[str]:
        """Command prefix running a program on ``node`` ("ctl" or "es<i>"): inside its namespace in namespace mode."""
        if self.mode != "netns":
            return []
        return fabric.netns_exec(fabric.CONTROL_NS if node == "ctl" else f"{fabric.PREFIX}{node}")


def read_state() -> State | None:
    path = state_dir() / "state.json"
    if not path.exists():
        return None
    return State(**json.loads(path.read_text()))


def running_state() -> State | None:
    """The prototype that is up, or None; what a killed run left behind (its scheduler dead) is removed."""
    state = read_state()
    if state is not None and not fabric.alive(state.pids.get("scheduler", -1)):
        down(echo=lambda *_: None)
        return None
    return state


def resolve_mode(requested: str) -> tuple[str, str | None]:
    """The mode that will run, and why namespace mode does not (None when it does)."""
    why = fabric.available()
    if requested == "netns" and why:
        raise PrototypeError(f"network.mode = 'netns' needs root, ip, tc and cgroup-v1 CPU: {why}")
    if requested == "loopback":
        return "loopback", "asked for"
    return ("netns", None) if why is None else ("loopback", why)


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **WORKER_ENV, **DASK_ENV, CACHE_ENV: compilation_cache_dir() or "off", **extra}


def _spawn(cmd: list[str], log: Path, env: dict[str, str]) -> int:
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc.pid


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n    ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def prewarm(config: PrototypeConfig) -> None:
    """Compile every request shape once into the persistent cache, outside any CPU quota."""
    code = (
        "from mecsim.prototype.service import load_repairer; "
        f"load_repairer({config.service.max_images}, {list(config.service.step_choices)})"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env({}), capture_output=True, text=True)
    if done.returncode:
        raise PrototypeError(f"compiling the repair service failed:\n{done.stderr[-2000:]}")


def up(config: PrototypeConfig, echo=print) -> State:
    """Build the network (namespace mode), start the scheduler and one worker per ES, wait until all joined."""
    current = running_state()
    if current is not None:
        raise PrototypeError(
            f"the prototype is already up ({current.mode} mode, {current.n_es} ESs, since "
            f"{time.strftime('%H:%M:%S', time.localtime(current.started))}); run `mecsim prototype down` first"
        )
    mode, why = resolve_mode(config.network.mode)
    config.check(os.cpu_count() or 1)
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    state = State(mode, str(folder / "scheduler.json"), {}, config.n_es, time.time(), why)
    try:
        if mode == "netns":
            fabric.remove_all()  # anything a crashed run left
            fabric.build(config)
        _write_state(state)  # from here on, `down` can remove what exists
        echo(f"prototype: {mode} mode" + (f" ({why})" if why else "") + "; compiling the service")
        prewarm(config)
        host = config.address(0, "control") if mode == "netns" else "127.0.0.1"
        port = config.network.scheduler_port if mode == "netns" else 0
        state.pids["scheduler"] = _spawn(
            state.prefix("ctl")
            + [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host, "--port", str(port),
               "--no-dashboard", "--scheduler-file", state.scheduler_file],
            folder / "scheduler.log",
            _env({}),
        )  # fmt: skip
        _write_state(state)
        _wait_for(lambda: Path(state.scheduler_file).exists(), "the Dask scheduler", folder / "scheduler.log",
                  SCHEDULER_START_S, state, "scheduler", "")  # fmt: skip
        for i in range(config.n_es):
            name = f"ES{i}"
            host = config.address(i + 1) if mode == "netns" else "127.0.0.1"
            log = folder / f"es{i}.log"
            state.pids[name] = _spawn(
                state.prefix(f"es{i}")
                + [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", state.scheduler_file,
                   "--name", name, "--nthreads", "2", "--no-nanny", "--resources", f"{name}=1", "--host", host,
                   "--no-dashboard", "--memory-limit", "0", "--death-timeout", "60",
                   "--local-directory", str(folder / f"es{i}"), "--preload", "mecsim.prototype.service"],
                log,
                _env({SHAPES_ENV: ",".join(map(str, (config.service.max_images, *config.service.step_choices)))}),
            )  # fmt: skip
            if mode == "netns":
                fabric.join_cgroup(i, state.pids[name])
            _write_state(state)
        for i in range(config.n_es):
            log = folder / f"es{i}.log"
            _wait_for(lambda log=log: "Registered to" in log.read_text(errors="replace"), f"worker ES{i}", log,
                      config.network.start_timeout_s, state, f"ES{i}", "network.start_timeout_s = ")  # fmt: skip
        if mode == "netns":  # compiled and joined: now each worker gets its share of the CPU
            for i in range(config.n_es):
                fabric.set_quota(i, config.quota_us(i, fabric.PERIOD_US))
    except BaseException:
        down(echo=lambda *_: None)
        raise
    echo(f"prototype up: scheduler and {config.n_es} workers ({mode} mode)")
    return state


def _wait_for(ready, what: str, log: Path, timeout: float, state: State, pid_name: str, setting: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        pid = state.pids[pid_name]
        if not fabric.alive(pid):
            raise PrototypeError(f"{what} exited before it was ready; its log ends:\n    {_tail(log)}")
        if time.monotonic() > deadline:
            raise PrototypeError(
                f"{what} did not start within {setting}{timeout:g} s; everything the "
                f"prototype started was removed. Its log ends:\n    {_tail(log)}"
            )
        time.sleep(0.1)


def _write_state(state: State) -> None:
    write_text(state_dir() / "state.json", json.dumps(asdict(state)))


def down(echo=print) -> list[str]:
    """Stop every process and remove the network and CPU groups; says what it removed (nothing is fine)."""
    state = read_state()
    removed = []
    if state is not None:
        alive = {name: pid for name, pid in state.pids.items() if fabric.alive(pid)}
        fabric.kill(list(alive.values()))
        removed += [f"process {name} ({pid})" for name, pid in alive.items()]
    if fabric.available() is None:
        removed += fabric.remove_all()
    if state_dir().exists():
        shutil.rmtree(state_dir())
    echo("prototype down: removed " + ", ".join(removed) if removed else "prototype down: nothing was up")
    return removed


def driver_command(state: State) -> list[str]:
    """How to run a Python module as a client: inside the control namespace in namespace mode."""
    return state.prefix("ctl") + [sys.executable, "-m"]


def client_env() -> dict[str, str]:
    return _env({})
