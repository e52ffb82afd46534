"""The ``mecsim`` command line: run, its parquet outputs, reproducibility and error reporting."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import mecsim
from mecsim.cli import main
from mecsim.config import Scenario

SMALL = ["--set", "slots=4", "--set", "tasks_per_slot=5"]
EPISODE_COLUMNS = {
    "scheduler",
    "model",
    "seed",
    "episode",
    "phase",
    "mean_makespan",
    "mean_latency",
    "p95_latency",
    "failure_rate",
    "n_tasks",
    "config_hash",
    "git_commit",
    "mecsim_version",
}


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def run_ok(*args):
    result = invoke("run", *args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_run_writes_the_episode_table(tmp_path):
    out = tmp_path / "ep.parquet"
    result = run_ok("--scheduler", "random", "--episodes", "2", "--seed", "3", *SMALL, "--out", str(out))
    assert "random" in result.output and "mean make-span" in result.output
    df = pd.read_parquet(out)
    assert EPISODE_COLUMNS <= set(df.columns)
    assert len(df) == 2
    assert df["episode"].tolist() == [0, 1]
    assert (df["scheduler"] == "random").all()
    assert (df["model"] == "slotted").all()
    assert (df["seed"] == 3).all()
    assert (df["phase"] == "online").all()
    assert (df["mecsim_version"] == mecsim.__version__).all()
    assert df["git_commit"].map(lambda s: isinstance(s, str) and len(s) > 0).all()
    assert (df["config_hash"] == Scenario(slots=4, tasks_per_slot=5).config_hash()).all()
    assert (df["n_tasks"] > 0).all()
    assert df["failure_rate"].between(0, 1).all()
    assert (df["mean_makespan"] > 0).all() and (df["mean_makespan"] <= 1.0).all()
    assert (df["p95_latency"] >= 0).all()
    assert "wall_time_s" in df.columns  # timing on by default
    # the scenario's fields are columns too
    assert (df["slots"] == 4).all() and (df["tasks_per_slot"] == 5).all()


def test_tasks_out_has_one_row_per_task(tmp_path):
    out, tasks = tmp_path / "ep.parquet", tmp_path / "tasks.parquet"
    run_ok("--scheduler", "optimal", "--episodes", "2", *SMALL, "--out", str(out), "--tasks-out", str(tasks))
    ep, tk = pd.read_parquet(out), pd.read_parquet(tasks)
    assert len(tk) == ep["n_tasks"].sum()
    assert tk.groupby("episode").size().tolist() == ep["n_tasks"].tolist()
    for column in (
        "episode",
        "slot",
        "bs",
        "task",
        "size",
        "subset",
        "fractions",
        "latency",
        "makespan",
        "failed",
        "scheduler",
        "seed",
    ):
        assert column in tk.columns
    assert (tk["scheduler"] == "optimal").all()
    assert tk["slot"].between(0, 2).all()  # 4 slots, 3 of them decided
    assert tk["task"].between(0, 4).all()
    assert tk["size"].between(2.0, 5.0).all()
    # each task is recorded once
    assert not tk.duplicated(["episode", "slot", "bs", "task"]).any()
    fractions = np.stack(tk["fractions"].to_numpy())
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0, atol=1e-9)
    means = tk.groupby("episode")["makespan"].mean().to_numpy()
    np.testing.assert_allclose(means, ep["mean_makespan"].to_numpy(), rtol=1e-12)


def test_same_seed_no_timing_gives_identical_bytes(tmp_path):
    paths = []
    for name in ("a", "b"):
        out, tasks = tmp_path / f"{name}.parquet", tmp_path / f"{name}-tasks.parquet"
        run_ok(
            "--scheduler",
            "random",
            "--episodes",
            "2",
            "--seed",
            "5",
            "--no-timing",
            *SMALL,
            "--out",
            str(out),
            "--tasks-out",
            str(tasks),
        )
        paths.append((out, tasks))
    (a, at), (b, bt) = paths
    assert a.read_bytes() == b.read_bytes()
    assert at.read_bytes() == bt.read_bytes()
    assert "wall_time_s" not in pd.read_parquet(a).columns


def test_different_seed_gives_different_results(tmp_path):
    frames = []
    for seed in ("1", "2"):
        out = tmp_path / f"s{seed}.parquet"
        run_ok("--scheduler", "local", "--seed", seed, "--no-timing", *SMALL, "--out", str(out))
        frames.append(pd.read_parquet(out))
    a, b = frames
    assert a["seed"].iloc[0] == 1 and b["seed"].iloc[0] == 2
    assert a["config_hash"].iloc[0] == b["config_hash"].iloc[0]  # same experiment point
    assert (a["mean_makespan"].iloc[0], a["n_tasks"].iloc[0]) != (
        b["mean_makespan"].iloc[0],
        b["n_tasks"].iloc[0],
    )


def test_config_file_and_preset_option(tmp_path):
    cfg = tmp_path / "point.toml"
    cfg.write_text("[scenario]\nslots = 3\ntasks_per_slot = 3\ndeadline = 0.5\n")
    out = tmp_path / "ep.parquet"
    run_ok("--scheduler", "local", "--config", str(cfg), "--preset", "drlcoedge", "--out", str(out))
    df = pd.read_parquet(out)
    assert df["preset"].iloc[0] == "drlcoedge"
    assert df["deadline"].iloc[0] == 0.5
    assert bool(df["variant.local_wait_includes_tau"].iloc[0]) is True
    assert (df["mean_makespan"] <= 0.5).all()


@pytest.mark.parametrize(
    "sets,needles",
    [
        (["deadline=-1"], ["deadline", "-1"]),
        (["arrival_prob=2"], ["arrival_prob", "2"]),
        (["allocation=greedy"], ["allocation", "greedy", "cwa", "hecwa", "waterfill"]),
        (["capacities=[10,20]"], ["capacities", "2 entries"]),
        (["no_such_field=3"], ["no_such_field", "unknown field"]),
        (["deadline"], ["deadline", "key=value"]),
    ],
)
def test_invalid_set_value_fails_with_a_message_naming_the_field(tmp_path, sets, needles):
    out = tmp_path / "ep.parquet"
    args = [x for s in sets for x in ("--set", s)]
    result = invoke("run", "--scheduler", "local", *args, "--out", str(out))
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output
    assert not out.exists()


def test_unknown_scheduler_lists_known_ones(tmp_path):
    out = tmp_path / "ep.parquet"
    result = invoke("run", "--scheduler", "no-such-sched", *SMALL, "--out", str(out))
    assert result.exit_code != 0
    assert "no-such-sched" in result.output
    for name in ("local", "random", "optimal", "best-single"):
        assert name in result.output
    assert not out.exists()


def test_scheduler_from_a_file_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    (tmp_path / "cli_user_plugin_mod.py").write_text(
        "from mecsim.scheduling import Decision, Scheduler\n"
        "class First(Scheduler):\n"
        "    def decide(self, obs):\n"
        "        return Decision.to(0, obs.n_servers)\n"
    )
    run_ok(
        "--scheduler", "cli_user_plugin_mod:First", *SMALL, "--out", "ep.parquet", "--tasks-out", "t.parquet"
    )
    tk = pd.read_parquet(tmp_path / "t.parquet")
    assert all(list(s) == [True, False, False, False, False] for s in tk["subset"])
    assert (pd.read_parquet(tmp_path / "ep.parquet")["scheduler"] == "cli_user_plugin_mod:First").all()


def test_schedulers_command_lists_plugins():
    result = invoke("schedulers")
    assert result.exit_code == 0
    for name, target in (
        ("local", "schedulers.local:LocalScheduler"),
        ("optimal", "schedulers.optimal:OptimalScheduler"),
    ):
        assert any(line.split() == [name, target] for line in result.output.splitlines())


def test_config_command_prints_the_validated_scenario():
    result = invoke("config", "--set", "preset=randcoedge", "--set", "deadline=0.25")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["deadline"] == 0.25
    assert data["capacities"] == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert data["variant"]["tau_counts_local"] is True
    assert data["variant"]["fail_penalty"] == 2.0


def test_config_command_rejects_bad_values():
    result = invoke("config", "--set", "slots=1")
    assert result.exit_code != 0
    assert "slots" in result.output
