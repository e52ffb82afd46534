"""The emulated network and the servers' CPU shares, on one machine (namespace mode, as root).

Layout: a namespace ``mecsim-br`` holds only two bridges, data (br0) and control (br1);
``mecsim-ctl`` (scheduler, dispatcher) and ``mecsim-es<i>`` (one per edge server) each hold one
end of a veth pair to each bridge. The root namespace gets no interface and no address: nothing
in it can reach the emulated network, and the emulated network has no route out. Addresses come
from 198.18.0.0/15: data plane ``network.subnet``, control plane ``network.control_subnet``.

Links: the data bridge's port towards ES i sends at r_i (``tc qdisc ... tbf``), so every upload
into ES i shares one FIFO link of rate r_i — the event model's ``link_topology = "destination"``.
Results coming back to BS b cross BS b's own port (rate r_b). The data plane's frames are small
(``network.data_mtu``) and tbf's peak rate is 1.05 r_i, so even a transfer of a few kB is paced
at the link's rate instead of leaving at once from the token bucket. Workers listen on the data plane
(peers fetch inputs and results there) and reach the scheduler on the control plane, which is
not shaped: the scheduler's messages do not queue behind image transfers.

CPU: ES i's worker runs in the cgroup-v1 group ``/sys/fs/cgroup/cpu/mecsim-prototype/es<i>`` with a
CFS quota of its capacity in cores. ``ip netns exec`` remounts /sys in the namespace, so membership
is written here, from the root namespace. The quota is set once the worker has compiled its service.

`remove_all` undoes everything any earlier run may have left (namespaces by prefix, the cgroup
tree, recorded processes), so it is safe to call at any time.
"""

from __future__ import annotations

import errno
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
PERIOD_US = 10_000  # short: a throttled worker (its event loop too) waits at most 10 ms for its next share
PEAK = 1.05
"""tbf's peak rate over its rate: a burst drains at most this much faster than the link (one frame
goes at once), so small transfers are shaped too rather than sent whole from the bucket."""


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
    """Create the namespaces, the two bridges, the veth pairs (data links shaped), and the CPU groups."""
    nodes = [CONTROL_NS] + [es_namespace(i) for i in range(config.n_es)]
    mtu = config.network.data_mtu
    frame = mtu + 64  # what tbf counts of one packet: the IP packet and its link-layer header
    _run("ip", "netns", "add", BRIDGE_NS)
    for bridge in ("br0", "br1"):
        _run("ip", "-n", BRIDGE_NS, "link", "add", bridge, "type", "bridge")
        _run("ip", "-n", BRIDGE_NS, "link", "set", bridge, "up")
    for n, ns in enumerate(nodes):
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        for dev, port, bridge, plane in (
            ("eth0", f"p{n}", "br0", "data"),
            ("eth1", f"c{n}", "br1", "control"),
        ):
            _run("ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", BRIDGE_NS)  # fmt: skip
            _run("ip", "-n", ns, "addr", "add", config.address(n, plane, with_prefix=True), "dev", dev)
            if plane == "data":
                _run("ip", "-n", ns, "link", "set", dev, "mtu", str(mtu))
                _run("ip", "-n", BRIDGE_NS, "link", "set", port, "mtu", str(mtu))
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", BRIDGE_NS, "link", "set", port, "master", bridge)
            _run("ip", "-n", BRIDGE_NS, "link", "set", port, "up")
        if n:  # the data port towards ES n-1 sends at its rate: uploads into that ES share this link
            shape(f"p{n}", config.rate_kbit(n - 1), frame)
    CGROUP.mkdir(exist_ok=True)
    for i in range(config.n_es):
        group = CGROUP / f"es{i}"
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text("-1")  # no limit while the service compiles (`set_quota`)


def shape(port: str, kbit: float, frame: int) -> None:
    """Pace ``port`` at ``kbit`` with tbf; packets under 256 bytes (requests, acknowledgements) skip it.

    The links and the payloads are both scaled down (kbit/s and kB instead of Mbit/s and MB) so
    that a transfer takes a visible share of a task; a request or an acknowledgement does not scale,
    and queued behind image data at a few kbit/s it would cost as much as the data itself.
    """
    tc = ("tc", "-n", BRIDGE_NS)
    # htb only sorts (both classes far faster than the link; this kernel has no prio qdisc): class 1
    # for small packets, class 2 (the default) for the rest, which the tbf under it paces
    _run(*tc, "qdisc", "add", "dev", port, "root", "handle", "1:", "htb", "default", "2")
    for cls in ("1:1", "1:2"):
        _run(*tc, "class", "add", "dev", port, "parent", "1:", "classid", cls, "htb", "rate", "1000mbit",
             "quantum", "1514")  # fmt: skip
    _run(
        *tc, "qdisc", "add", "dev", port, "parent", "1:2", "handle", "20:", "tbf", "rate", f"{kbit:.3f}kbit",
        "burst", str(2 * frame), "limit", "1000000", "peakrate", f"{PEAK * kbit:.3f}kbit", "mtu", str(frame),
    )  # fmt: skip
    # IPv4 total length (bytes 2-3 of the header) below 256: its high byte is 0
    _run(*tc, "filter", "add", "dev", port, "parent", "1:", "protocol", "ip", "prio", "1",
         "u32", "match", "u16", "0x0000", "0xff00", "at", "2", "flowid", "1:1")  # fmt: skip


def set_quota(i: int, quota_us: int) -> None:
    """ES ``i``'s CPU share: ``quota_us`` of every ``PERIOD_US``."""
    (CGROUP / f"es{i}" / "cpu.cfs_quota_us").write_text(str(quota_us))


def join_cgroup(i: int, pid: int) -> None:
    """Put process ``pid`` (its threads and later children) in ES ``i``'s CPU group."""
    (CGROUP / f"es{i}" / "cgroup.procs").write_text(str(pid))


def shaping(i: int) -> str:
    """tc's report of ES ``i``'s link (for provenance)."""
    return " / ".join(_run("tc", "-n", BRIDGE_NS, "qdisc", "show", "dev", f"p{i + 1}").strip().splitlines())


def kill(pids, grace_s: float = 5.0) -> None:
    """SIGTERM each process group, then SIGKILL what is left after ``grace_s``."""
    pids = [p for p in pids if alive(p)]
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
            pids = [p for p in pids if alive(p)]
            time.sleep(0.05)
        if not pids:
            return


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
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
            remove_group(group)
            removed.append(f"cgroup {group}")
        remove_group(CGROUP)
        removed.append(f"cgroup {CGROUP}")
    return removed


def remove_group(group: Path, timeout_s: float = 10.0) -> None:
    """Kill the CPU group's processes and remove it, retrying while the kernel says it is busy.

    A killed process can hold its group a moment after it has stopped counting as alive: the
    leader of a multi-threaded process is a zombie while its other threads are still exiting,
    and some kernels keep a zombie in its group until it is reaped. ``rmdir`` fails with EBUSY
    meanwhile; only a group still busy after ``timeout_s`` is an error.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        kill([int(p) for p in (group / "cgroup.procs").read_text().split()], grace_s=2.0)
        try:
            group.rmdir()
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                left = (group / "cgroup.procs").read_text().split()
                raise PrototypeError(
                    f"could not remove the CPU group {group} ({error.strerror}); processes still "
                    f"in it: {', '.join(left) or 'none listed (exited, not yet reaped by their parent)'}"
                ) from error
            time.sleep(0.1)
