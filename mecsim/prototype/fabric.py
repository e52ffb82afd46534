"""The emulated network and the servers' CPU shares, on one machine (namespace mode, as root).

Layout: a namespace ``mecsim-br`` holds only a bridge; ``mecsim-ctl`` (scheduler, dispatcher) and
``mecsim-es<i>`` (one per edge server) each hold one end of a veth pair whose other end is a port
of the bridge. The root namespace gets no interface and no address: nothing in it can reach the
emulated network, and the emulated network has no route out. Addresses come from 198.18.0.0/15.

Links: the bridge port towards ES i sends at r_i (``tc qdisc ... tbf``), so every upload into ES i
shares one FIFO link of rate r_i — the event model's ``link_topology = "destination"``. Results
coming back to BS b cross BS b's own port (rate r_b).

CPU: ES i's worker runs in the cgroup-v1 group ``/sys/fs/cgroup/cpu/mecsim-prototype/es<i>`` with a
CFS quota of its capacity in cores. ``ip netns exec`` remounts /sys in the namespace, so membership
is written here, from the root namespace. The quota is set once the worker has compiled its service.

`remove_all` undoes everything any earlier run may have left (namespaces by prefix, the cgroup
tree, recorded processes), so it is safe to call at any time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .config import PrototypeConfig
from .errors import PrototypeError

PREFIX = "mecsim-"
BRIDGE_NS = "mecsim-br"
CONTROL_NS = "mecsim-ctl"
CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")
CGROUP = CGROUP_ROOT / "mecsim-prototype"
PERIOD_US = 100_000


def es_namespace(i: int) -> str:
    return f"{PREFIX}es{i}"


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise PrototypeError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def available() -> str | None:
    """None when namespace mode can run here; otherwise why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found"
    if not (CGROUP_ROOT / "cpu.cfs_quota_us").exists():
        return f"no cgroup-v1 CPU controller at {CGROUP_ROOT}"
    try:
        _run("ip", "netns", "list")
    except PrototypeError as err:
        return str(err)
    return None


def namespaces() -> list[str]:
    """The prototype's namespaces that exist now."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def netns_exec(namespace: str) -> list[str]:
    """The command prefix that runs a program inside ``namespace``."""
    return ["ip", "netns", "exec", namespace]


def build(config: PrototypeConfig) -> None:
    """Create the namespaces, the bridge, one shaped veth pair per node, and the CPU groups."""
    nodes = [CONTROL_NS] + [es_namespace(i) for i in range(config.n_es)]
    prefix_len = config.network.subnet.split("/")[1]
    burst = config.network.burst_bytes
    _run("ip", "netns", "add", BRIDGE_NS)
    _run("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
    _run("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
    for n, ns in enumerate(nodes):
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run(
            "ip",
            "link",
            "add",
            "eth0",
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            f"p{n}",
            "netns",
            BRIDGE_NS,
        )
        _run("ip", "-n", ns, "addr", "add", f"{config.address(n)}/{prefix_len}", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", BRIDGE_NS, "link", "set", f"p{n}", "master", "br0")
        _run("ip", "-n", BRIDGE_NS, "link", "set", f"p{n}", "up")
        if n:  # the port towards ES n-1 sends at its rate: uploads into that ES share this link
            kbit = config.rate_kbit(n - 1)
            _run(
                "tc", "-n", BRIDGE_NS, "qdisc", "add", "dev", f"p{n}", "root", "tbf",
                "rate", f"{kbit:.3f}kbit", "burst", str(burst), "limit", str(max(4 * burst, 1_000_000)),
            )  # fmt: skip
    CGROUP.mkdir(exist_ok=True)
    for i in range(config.n_es):
        group = CGROUP / f"es{i}"
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text("-1")  # no limit while the service compiles (`set_quota`)


def set_quota(i: int, quota_us: int) -> None:
    """ES ``i``'s CPU share: ``quota_us`` of every ``PERIOD_US``."""
    (CGROUP / f"es{i}" / "cpu.cfs_quota_us").write_text(str(quota_us))


def join_cgroup(i: int, pid: int) -> None:
    """Put process ``pid`` (its threads and later children) in ES ``i``'s CPU group."""
    (CGROUP / f"es{i}" / "cgroup.procs").write_text(str(pid))


def shaping(i: int) -> str:
    """tc's report of ES ``i``'s link (for provenance)."""
    return _run("tc", "-n", BRIDGE_NS, "qdisc", "show", "dev", f"p{i + 1}").strip()


def kill(pids, grace_s: float = 5.0) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``grace_s``."""
    pids = [p for p in pids if _alive(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            for send in (os.killpg, os.kill):  # a group leader's whole group, else the process
                try:
                    send(pid, sig)
                    break
                except (ProcessLookupError, PermissionError):
                    continue
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.05)
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def remove_all() -> list[str]:
    """Remove every namespace, CPU group and process the prototype made; returns what was removed."""
    removed = []
    for ns in namespaces():
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        kill([int(p) for p in pids], grace_s=2.0)
        _run("ip", "netns", "del", ns)
        removed.append(f"namespace {ns}")
    if CGROUP.exists():
        for group in sorted(CGROUP.glob("es*")):
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
            kill(pids, grace_s=2.0)
            group.rmdir()
            removed.append(f"cgroup {group}")
        CGROUP.rmdir()
        removed.append(f"cgroup {CGROUP}")
    return removed
