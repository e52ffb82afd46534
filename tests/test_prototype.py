"""The distributed prototype: its parts by hand-computed cases, and whole runs (namespace mode as root, loopback)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from mecsim.cli import main
from mecsim.config import load_scenario
from mecsim.engine import Simulation
from mecsim.plugins import make_scheduler
from mecsim.prototype import cluster, fabric
from mecsim.prototype.cli import DEFAULT_SCHEDULERS, QUICK, default_config
from mecsim.prototype.compare import Replay
from mecsim.prototype.config import PrototypeError, load
from mecsim.prototype.phases import subtask_phases, task_phases
from mecsim.prototype.requests import largest_remainder, requests_of, sim_scenario

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config():
    return load(default_config())


@pytest.fixture
def quick_config():
    return load(default_config(), QUICK)


# -- splitting a request ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fractions, total, expected",
    [
        ([0.5, 0.5, 0.0], 3, [2, 1, 0]),  # a tie goes to the first
        ([1 / 3] * 3, 4, [2, 1, 1]),
        ([0.1, 0.65, 0.25], 4, [0, 3, 1]),  # floors 0, 2, 1; the largest remainder (0.6, ES1) gets the last
        ([0.0, 1.0, 0.0], 5, [0, 5, 0]),
    ],
)
def test_largest_remainder_by_hand(fractions, total, expected):
    assert largest_remainder(fractions, total).tolist() == expected


@given(st.lists(st.floats(0, 1), min_size=1, max_size=6).filter(lambda v: sum(v) > 0), st.integers(1, 64))
def test_largest_remainder_keeps_every_image_and_stays_within_one(raw, total):
    x = np.asarray(raw) / sum(raw)
    counts = largest_remainder(x, total)
    assert counts.sum() == total and (counts >= 0).all()
    assert np.all(np.abs(counts - x * total) < 1 + 1e-9)


def test_requests_follow_the_simulators_trace(config):
    a, b = requests_of(config, seed=3), requests_of(config, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.steps, b.steps)
    present = a.images > 0
    assert present.any()
    assert a.images[present].min() >= 1 and a.images.max() <= config.service.max_images
    assert set(np.unique(a.steps[present])) <= set(config.service.step_choices)
    trace = a.trace(config)
    assert np.array_equal(present, trace.sizes > 0)
    work = trace.sizes * trace.densities  # core-seconds = images x steps x c
    assert np.allclose(work, a.images * a.steps * config.service.seconds_per_evaluation)
    assert np.allclose(trace.results, a.images * 256 * 8 / config.scenario.bits_per_mbit)


def test_replay_reproduces_a_schedulers_own_run(config):
    """Replaying the splits a scheduler chose gives that scheduler's make-spans, task by task."""
    scenario = sim_scenario(config)
    trace = requests_of(config, 1).trace(config)
    chosen = Simulation(scenario, make_scheduler("optimal", scenario)).run_episode(0, trace=trace).log
    replay = Replay(
        {(s, b, t): f for s, b, t, f in zip(chosen.slot, chosen.bs, chosen.task, chosen.fractions)}
    )
    replayed = Simulation(scenario, replay).run_episode(0, trace=trace).log
    assert np.array_equal(replayed.fractions, chosen.fractions)
    np.testing.assert_allclose(replayed.latency, chosen.latency, rtol=0, atol=1e-12)


def test_phases_from_a_task_stream_by_hand():
    class Sub:
        k, es, images, steps, attempt, end = 0, 1, 2, 20, 0, 10.0
        keys = {"part": "p", "repair": "r", "fetch": "f"}

    stream = [
        {"key": "p", "startstops": [{"action": "compute", "start": 1.1, "stop": 1.2}]},
        {
            "key": "r",
            "startstops": [
                {"action": "transfer", "start": 1.3, "stop": 2.0},
                {"action": "compute", "start": 3.0, "stop": 5.0},
            ],
        },  # fmt: skip
        {
            "key": "f",
            "startstops": [
                {"action": "transfer", "start": 5.5, "stop": 6.0},
                {"action": "compute", "start": 6.0, "stop": 6.01},
            ],
        },  # fmt: skip
    ]
    sub = subtask_phases(stream, [Sub()], {0: 1.0})
    row = sub.iloc[0]
    assert row.upload == pytest.approx(0.7) and row.queueing == pytest.approx(1.0)
    assert row.compute == pytest.approx(2.0) and row.download == pytest.approx(0.5)
    assert row.span == pytest.approx(9.0) and row.overhead == pytest.approx(9.0 - 4.2)
    assert row.input_ready == pytest.approx(0.2) and row.before_download == pytest.approx(0.5)
    per_task = task_phases(sub, 2)
    assert per_task.loc[0, "critical_es"] == 1 and per_task.loc[1].isna().all()


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, names",
    [
        ({"scenario.capacities": [0.9, 0.9, 0.9]}, ["scenario.capacities", "2.7"]),
        ({"scenario.capacities": [0.5, 1.5, 0.1]}, ["capacities[1] = 1.5", "at most 1 core"]),
        ({"scenario.rates": [0.03, 0.000001, 0.05]}, ["scenario.rates[1]", "kbit/s"]),
        ({"scenario.model": "slotted", "scenario.link_topology": "pair"}, ["scenario.model"]),
        ({"scenario.density_range": [100.0, 200.0]}, ["density_range", "step_choices"]),
    ],
)
def test_a_scenario_the_machine_cannot_honour_is_refused(config, overrides, names):
    bad = load(default_config(), overrides)
    with pytest.raises(PrototypeError) as err:
        bad.check(cores=2)
    for name in names:
        assert name in str(err.value)
    config.check(cores=2)  # the default fits this machine


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"network.subnet": "10.0.0.0/24"}, "198.18.0.0/15"),
        ({"service.step_choices": [40, 20]}, "increasing"),
        ({"scenario.capacities": [1.0, 1.0]}, "n_bs"),
        ({"colour.red": 1}, "scenario.<field>"),
    ],
)
def test_bad_configuration_names_the_field(overrides, needle):
    with pytest.raises(PrototypeError, match=None) as err:
        load(default_config(), overrides)
    assert needle in str(err.value)


def test_the_cli_refuses_an_unknown_scheduler_without_a_traceback(tmp_path):
    before = cluster.read_state()
    result = CliRunner().invoke(main, ["prototype", "run", "--quick", "--schedulers", "local,nosuch",
                                       "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code != 0
    assert "nosuch" in result.output and "Traceback" not in result.output
    assert cluster.read_state() == before  # refused before anything was started
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "address, needle",
    [("tcp://198.18.1.1:8786", "must not connect"), ("no/such/scheduler.json", "neither an address")],
)
def test_a_scheduler_address_the_root_namespace_must_not_use_is_refused(tmp_path, address, needle):
    before = cluster.read_state()
    result = CliRunner().invoke(main, ["prototype", "run", "--quick", "--scheduler-address", address,
                                       "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code != 0 and needle in result.output and "Traceback" not in result.output
    assert cluster.read_state() == before


@pytest.mark.parametrize(
    "content, needle",
    [("{not json", "not a calibration.json"),
     ('{"compute": [{}, {}], "links": [{}, {}]}', "measured [2] ESs but scenario.n_bs = 3")],
)  # fmt: skip
def test_a_calibration_that_does_not_fit_is_refused(tmp_path, content, needle):
    (tmp_path / "cal.json").write_text(content)
    result = CliRunner().invoke(main, ["prototype", "run", "--quick", "--calibration", str(tmp_path / "cal.json"),
                                       "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code != 0 and needle in result.output and "Traceback" not in result.output


def test_down_with_nothing_up_says_so():
    _require_nothing_up()
    result = CliRunner().invoke(main, ["prototype", "down"])
    assert result.exit_code == 0 and "nothing was up" in result.output


# -- whole runs ---------------------------------------------------------------------------------------
def _leftovers() -> list[str]:
    out = subprocess.run(
        ["pgrep", "-f", "distributed.cli.dask_|mecsim.prototype.driver"], capture_output=True, text=True
    )
    left = [f"process {p}" for p in out.stdout.split()]
    if fabric.available() is None:
        left += fabric.namespaces() + ([str(fabric.CGROUP)] if fabric.CGROUP.exists() else [])
    return left + ([str(cluster.state_dir())] if cluster.state_dir().exists() else [])


def _require_nothing_up() -> None:
    """These tests bring the prototype up and down: never while one (a user's) is running here."""
    if _leftovers():
        pytest.skip(f"a prototype is up on this machine ({', '.join(_leftovers())}); not touching it")


def _mecsim(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mecsim", "prototype", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)  # fmt: skip


def _check_run(out: Path, schedulers: list[str], config) -> pd.DataFrame:
    tasks = pd.read_parquet(out / "tasks.parquet")
    episodes = pd.read_parquet(out / "episodes.parquet")
    assert sorted(tasks["scheduler"].unique()) == sorted(schedulers)
    expected = int((requests_of(config, 0).images[: config.scenario.decision_slots] > 0).sum())
    for _, g in tasks.groupby("scheduler"):  # every task of the trace, once
        assert len(g) == expected
        assert not g.duplicated(["slot", "bs", "task"]).any()
        fractions = np.stack(g["fractions"].to_numpy())
        assert np.allclose(fractions.sum(axis=1), 1.0)
        shares = fractions * g["images"].to_numpy()[:, None]  # realised: whole images per ES
        assert np.allclose(shares, np.round(shares))
    ok = tasks["error"].isna()
    assert (tasks.loc[ok, "latency"] > 0).all()
    for col in ("upload_s", "queueing_s", "compute_s", "download_s"):
        assert (tasks.loc[ok, col].dropna() >= 0).all()
    assert (tasks.loc[ok, "compute_s"].dropna() > 0).all()
    assert np.isfinite(tasks.loc[ok, "sim_replay_latency"]).all()
    assert set(episodes["scheduler"]) == set(schedulers)
    for name in ("summary.md", "prototype.png", "grid.png", "provenance.json"):
        assert (out / name).stat().st_size > 0
    return tasks


@pytest.mark.slow
@pytest.mark.skipif(
    fabric.available() is not None, reason=f"namespace mode unavailable: {fabric.available()}"
)
def test_quick_run_in_namespaces_with_a_worker_killed(tmp_path, quick_config):
    """All default schedulers on the emulated network; ES1 is SIGKILLed 1 s into the last run."""
    _require_nothing_up()
    out = tmp_path / "run"
    done = _mecsim("run", "--quick", "--out", str(out), "--kill-worker", "ES1", "--kill-at", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "netns mode" in done.stdout
    assert _leftovers() == []
    tasks = _check_run(out, list(DEFAULT_SCHEDULERS), quick_config)
    killed = tasks[tasks["scheduler"] == "amcoedge"]
    late = killed[killed["arrival_time"] >= 2.0]  # the kill lands at 1 s
    at_bs1, others = late[late["bs"] == 1], late[late["bs"] != 1]
    assert len(at_bs1) and len(others)
    # after the kill a request at BS 1 has lost its input (failed, recorded); the others complete, and
    # each share they had on ES1 was sent again
    assert at_bs1["error"].notna().all() and at_bs1["failed"].all()
    assert others["error"].isna().all()
    on_es1 = int((others["fractions"].map(lambda f: f[1]) > 0).sum())
    assert others["redispatches"].sum() >= on_es1
    episodes = pd.read_parquet(out / "episodes.parquet").set_index("scheduler")
    assert episodes.loc["amcoedge", "killed_es"] == 1
    assert episodes.loc["amcoedge", "redispatched"] == killed["redispatches"].sum()
    provenance = (out / "provenance.json").read_text()
    assert "tbf" in provenance and "cpu_quota_us" in provenance


@pytest.mark.slow
def test_quick_run_on_loopback(tmp_path, quick_config):
    _require_nothing_up()
    out = tmp_path / "run"
    done = _mecsim(
        "run", "--quick", "--schedulers", "local,optimal", "--out", str(out), "--set", "network.mode=loopback"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "loopback mode" in done.stdout
    assert _leftovers() == []
    _check_run(out, ["local", "optimal"], quick_config)
    assert "labelled slowdown" in (out / "provenance.json").read_text()


@pytest.mark.slow
def test_up_twice_then_a_worker_that_never_starts(tmp_path):
    _require_nothing_up()
    mode = [] if fabric.available() is None else ["--set", "network.mode=loopback"]
    first = _mecsim("up", *mode)
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        second = _mecsim("up", *mode)
        assert second.returncode == 0 and "already up" in second.stdout
        # a run whose scenario disagrees with what is up
        bad = _mecsim("run", "--quick", "--out", str(tmp_path / "x"), "--set", "scenario.n_bs=2",
                      "--set", "scenario.capacities=[0.5,0.5]", "--set", "scenario.rates=[0.04,0.04]", *mode)  # fmt: skip
        assert bad.returncode != 0 and "n_bs = 2" in bad.stderr and "3 ESs" in bad.stderr
        # calibrate the prototype that is up; its scenario runs in the simulator as is
        cal = _mecsim("calibrate", "--repeats", "1", "--out", str(tmp_path / "cal"), *mode)
        assert cal.returncode == 0, cal.stdout[-2000:] + cal.stderr[-2000:]
        scenario = load_scenario(tmp_path / "cal" / "calibrated.toml")
        assert scenario.model == "event" and scenario.n_bs == 3 and all(f > 0 for f in scenario.capacities)
        assert Simulation(scenario, make_scheduler("local", scenario)).run_episode(0).metrics["n_tasks"] > 0
    finally:
        assert _mecsim("down").returncode == 0
    assert _leftovers() == []
    slow = _mecsim("up", "--set", "network.start_timeout_s=0.2", *mode)
    assert slow.returncode != 0
    assert "worker ES0 did not start within network.start_timeout_s = 0.2 s" in slow.stderr
    assert "Traceback" not in slow.stderr
    assert _leftovers() == []


@pytest.mark.skipif(fabric.available() is not None, reason=f"cgroups unavailable: {fabric.available()}")
def test_a_cpu_group_busy_for_a_moment_is_still_removed():
    group = fabric.CGROUP_ROOT / f"mecsim-test-{os.getpid()}"
    (group / "held").mkdir(parents=True)  # a child group: rmdir answers EBUSY, as for a process still exiting
    threading.Timer(0.5, (group / "held").rmdir).start()
    fabric.remove_group(group, timeout_s=10.0)
    assert not group.exists()


@pytest.mark.skipif(fabric.available() is not None, reason=f"cgroups unavailable: {fabric.available()}")
def test_a_cpu_group_that_stays_busy_is_an_error_naming_it():
    group = fabric.CGROUP_ROOT / f"mecsim-test-{os.getpid()}"
    (group / "held").mkdir(parents=True)
    try:
        with pytest.raises(PrototypeError, match=f"could not remove the CPU group {group} .*none listed"):
            fabric.remove_group(group, timeout_s=0.3)
        assert group.exists()
    finally:
        (group / "held").rmdir()
        group.rmdir()


@pytest.mark.skipif(os.geteuid() == 0, reason="as root namespace mode is available")
def test_namespace_mode_without_root_says_why():  # pragma: no cover - CI runs as root
    with pytest.raises(PrototypeError, match="needs root"):
        cluster.resolve_mode("netns")
