"""A catalogue of bad inputs, as a user would make them: each ends in a clear error that names the thing,
the value and what is allowed (never a Python traceback), or in the correct result."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mecsim.cli import main

SMALL = ["--set", "slots=3", "--set", "tasks_per_slot=3"]

PLUGINS = textwrap.dedent(
    """
    import numpy as np
    from mecsim import Decision, Scheduler

    class Crashing(Scheduler):
        def decide(self, obs):
            return 1 / 0

    class Short(Scheduler):
        def decide(self, obs):
            return np.ones(obs.n_servers - 1)

    class NotANumber(Scheduler):
        def decide(self, obs):
            return np.full(obs.n_servers, np.nan)

    class Writer(Scheduler):
        def decide(self, obs):
            obs.backlog[:] = 0
            return Decision.to(obs.bs, obs.n_servers)

    class Outside(Scheduler):
        def decide(self, obs):
            return Decision.to(obs.n_servers, obs.n_servers)

    class Unbuildable(Scheduler):
        def __init__(self, scenario, rng=None):
            raise RuntimeError("no GPU found")

        def decide(self, obs):
            return Decision.to(obs.bs, obs.n_servers)

    class Plain:
        def decide(self, obs):
            return Decision.to(obs.bs, obs.n_servers)

    class NoDecide(Scheduler):
        pass

    def function(obs):
        return None
    """
)


@pytest.fixture()
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plugins.py").write_text(PLUGINS)
    (tmp_path / "broken_syntax.py").write_text("def decide(obs:\n")
    (tmp_path / "broken_import.py").write_text("raise RuntimeError('missing licence file')\n")
    (tmp_path / "bad.toml").write_text("deadline = \n")
    (tmp_path / "stray.toml").write_text("[scenario]\ndeadline = 0.5\n[run]\nseeds = [0]\n")
    (tmp_path / "stray2.toml").write_text("colour = 'red'\n[scenario]\ndeadline = 0.5\n")
    (tmp_path / "value.toml").write_text("[scenario]\narrival_prob = 1.5\n")
    (tmp_path / "existing.parquet").write_text("")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    return tmp_path


def experiment(tmp: Path, name: str, body: str) -> str:
    path = tmp / f"{name}.toml"
    path.write_text(body)
    return str(path)


GOOD = """name = "{name}"
[scenario]
tasks_per_slot = 2
slots = 3
[methods.local]
episodes = 1
[[sweep]]
name = "default"
"""

# (id, arguments, text the message must contain); every case must fail cleanly
CASES = [
    # scenario values
    ("probability above 1", ["config", "--set", "arrival_prob=2"], "arrival_prob = 2"),
    ("infinite capacity", ["config", "--set", "capacities=[inf,20,30,40,50]"], "finite number"),
    ("NaN slot length", ["config", "--set", "slot_length=nan"], "slot_length = nan"),
    ("boolean deadline", ["config", "--set", "deadline=true"], "a boolean is not a number"),
    ("zero slot length", ["config", "--set", "slot_length=0"], "greater than 0"),
    ("too few capacities", ["config", "--set", "n_bs=3"], "capacities has 5 entries but n_bs = 3"),
    ("empty size range", ["config", "--set", "size_range=[5,2]"], "low <= high"),
    ("unknown model", ["config", "--set", "model=quantum"], "model = 'quantum'"),
    ("unknown preset", ["config", "--set", "preset=fastest"], "preset = 'fastest'"),
    ("event setting on the slotted model", ["config", "--set", "deadline_policy=drop"], "event model only"),
    ("unknown field", ["config", "--set", "colour=red"], "colour: unknown field"),
    ("assignment without =", ["config", "--set", "deadline"], "expected key=value"),
    ("unknown flag value", ["config", "--set", "variant.tau_clamp=sometimes"], "tau_clamp"),
    ("negative seed", ["config", "--set", "seed=-1"], "seed = -1"),
    ("fractional task count", ["config", "--set", "tasks_per_slot=2.5"], "tasks_per_slot = 2.5"),
    (
        "fault on a missing server",
        ["config", "--set", "faults.windows=[{target='server',index=9,start=0,end=1}]"],
        "fault targets [9] do not exist",
    ),
    (
        "fault factor above 1",
        ["config", "--set", "faults.windows=[{target='link',index=0,start=0,end=1,factor=2}]"],
        "factor",
    ),
    # scenario files
    ("file that is not TOML", ["config", "--config", "bad.toml"], "not valid TOML"),
    (
        "keys outside [scenario]",
        ["config", "--config", "stray2.toml"],
        "keys outside [scenario] would be ignored: colour",
    ),
    ("experiment file as a scenario", ["config", "--config", "stray.toml"], "is an experiment file"),
    ("missing scenario file", ["config", "--config", "nowhere.toml"], "does not exist"),
    ("bad value in a file", ["config", "--config", "value.toml"], "arrival_prob = 1.5"),
    # plugins
    (
        "unregistered scheduler",
        ["run", "--scheduler", "fastest", "--out", "o.parquet"],
        "'fastest' is not registered",
    ),
    (
        "missing module",
        ["run", "--scheduler", "nowhere:X", "--out", "o.parquet"],
        "cannot import module 'nowhere'",
    ),
    (
        "module with a syntax error",
        ["run", "--scheduler", "broken_syntax:X", "--out", "o.parquet"],
        "importing module 'broken_syntax' failed: SyntaxError",
    ),
    (
        "module failing at import",
        ["run", "--scheduler", "broken_import:X", "--out", "o.parquet"],
        "failed: RuntimeError: missing licence file",
    ),
    (
        "missing class",
        ["run", "--scheduler", "plugins:Nothing", "--out", "o.parquet"],
        "has no attribute 'Nothing'",
    ),
    (
        "function, not a class",
        ["run", "--scheduler", "plugins:function", "--out", "o.parquet"],
        "is not a class",
    ),
    ("class without decide", ["run", "--scheduler", "plugins:NoDecide", "--out", "o.parquet"], "no decide"),
    (
        "decide raises",
        ["run", "--scheduler", "plugins:Crashing", *SMALL, "--out", "o.parquet"],
        "raised ZeroDivisionError in decide (episode 0, slot 0, BS",
    ),
    (
        "decision of the wrong length",
        ["run", "--scheduler", "plugins:Short", *SMALL, "--out", "o.parquet"],
        "need (5,), one per edge server",
    ),
    (
        "NaN fractions",
        ["run", "--scheduler", "plugins:NotANumber", *SMALL, "--out", "o.parquet"],
        "non-finite",
    ),
    (
        "write into the observation",
        ["run", "--scheduler", "plugins:Writer", *SMALL, "--out", "o.parquet"],
        "wrote into field 'backlog'",
    ),
    (
        "helper given a missing server",
        ["run", "--scheduler", "plugins:Outside", *SMALL, "--out", "o.parquet"],
        "Decision.to: servers [5] must be",
    ),
    (
        "constructor raises",
        ["run", "--scheduler", "plugins:Unbuildable", "--out", "o.parquet"],
        "building it failed: RuntimeError: no GPU found",
    ),
    (
        "option for a plain class",
        ["run", "--scheduler", "plugins:Plain", "--option", "k=2", "--out", "o.parquet"],
        "unknown options ['k']",
    ),
    (
        "option a heuristic ignores",
        ["run", "--scheduler", "local", "--option", "lr=0.1", "--out", "o.parquet"],
        "unknown options ['lr']",
    ),
    (
        "bad learner option",
        ["run", "--scheduler", "amcoedge", "--option", "lr=fast", "--out", "o.parquet"],
        "option lr = 'fast'",
    ),
    (
        "unknown engine",
        ["run", "--scheduler", "local", "--engine", "gpu", "--out", "o.parquet"],
        "'gpu' is not one of",
    ),
    (
        "kernel for a scheduler without a JAX form",
        [
            "run",
            "--scheduler",
            "amcoedge",
            "--option",
            "observation=rich",
            "--engine",
            "compiled",
            "--out",
            "o.parquet",
        ],
        "no JAX-native form",
    ),
    # checkpoints
    (
        "checkpoint for a heuristic",
        ["run", "--scheduler", "local", "--checkpoint", "full", "--out", "o.parquet"],
        "has no learned parameters to load",
    ),
    (
        "checkpoint folder without files",
        ["run", "--scheduler", "amcoedge", "--checkpoint", "full", "--out", "o.parquet"],
        "cannot be read",
    ),
    # outputs
    (
        "output exists",
        ["run", "--scheduler", "local", *SMALL, "--out", "existing.parquet"],
        "exists; pass --force",
    ),
    ("output is a directory", ["run", "--scheduler", "local", *SMALL, "--out", "full"], "is a directory"),
    (
        "tasks table over the episode table",
        ["run", "--scheduler", "local", *SMALL, "--out", "a.parquet", "--tasks-out", "a.parquet"],
        "is the --out file",
    ),
    (
        "unwritable output",
        ["run", "--scheduler", "local", *SMALL, "--out", "/proc/mecsim/o.parquet"],
        "cannot write",
    ),
    (
        "training into a full directory",
        ["train", "--scheduler", "amcoedge", "--episodes", "1", *SMALL, "--out", "full"],
        "not an empty directory",
    ),
    # experiments and results
    (
        "unknown experiment",
        ["sweep", "no-such-experiment", "--dry-run"],
        "no experiment 'no-such-experiment'",
    ),
    (
        "plot without results",
        ["plot", "quick", "--results-dir", "empty-results"],
        "no results of experiment 'quick'",
    ),
]

EXPERIMENTS = [
    ("experiment not TOML", "x = [", "not valid TOML"),
    ("unknown key in a method", GOOD + "[methods.local.extra]\n", "unknown key"),
    ("repeated seeds", GOOD.replace("[scenario]", "[run]\nseeds = [1, 1]\n[scenario]"), "distinct integers"),
    ("block with an unknown method", GOOD + "methods = ['fastest']\n", "unknown method(s) fastest"),
    ("block with a bad value", GOOD + "parameter = 'deadline'\nvalues = [-1]\n", "sweep 'default'"),
    ("block with an unknown preset", GOOD + "presets = ['fastest']\n", "presets ['fastest']"),
    (
        "values that are not numbers without x",
        GOOD + "parameter = 'capacities'\nvalues = [[1,2,3,4,5]]\n",
        "give x",
    ),
    ("method without episodes", GOOD.replace("episodes = 1\n", ""), "episodes: required"),
]


def check(result, text: str) -> None:
    assert result.exit_code != 0, result.output
    assert (
        "Traceback" not in result.output
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )
    assert text in result.output, result.output


@pytest.mark.parametrize("args, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_command_line_input_is_refused_clearly(work, args, text):
    check(CliRunner().invoke(main, args), text)


@pytest.mark.parametrize("body, text", [c[1:] for c in EXPERIMENTS], ids=[c[0] for c in EXPERIMENTS])
def test_bad_experiment_file_is_refused_clearly(work, body, text):
    path = experiment(work, "x", body.format(name="x") if "{name}" in body else body)
    check(CliRunner().invoke(main, ["sweep", path, "--dry-run"]), text)


def test_experiment_extending_itself_is_refused(work):
    a = experiment(work, "a", 'extends = "b.toml"\n' + GOOD.format(name="a"))
    experiment(work, "b", 'extends = "a.toml"\n' + GOOD.format(name="b"))
    check(CliRunner().invoke(main, ["sweep", a, "--dry-run"]), "extends it back")


def test_checkpoints_of_another_shape_or_scheduler_are_refused(work):
    runner = CliRunner()
    assert (
        runner.invoke(
            main,
            [
                "train",
                "--scheduler",
                "drlcoedge",
                "--episodes",
                "1",
                "--eval-episodes",
                "0",
                *SMALL,
                "--out",
                "drl",
            ],
        ).exit_code
        == 0
    )
    ckpt = "drl/checkpoint"
    check(
        runner.invoke(main, ["run", "--scheduler", "amcoedge", "--checkpoint", ckpt, "--out", "o.parquet"]),
        "was saved by 'schedulers.drlcoedge:DRLCoEdgeScheduler'",
    )
    check(
        runner.invoke(
            main,
            [
                "run",
                "--scheduler",
                "drlcoedge",
                "--checkpoint",
                ckpt,
                "--set",
                "n_bs=3",
                "--set",
                "capacities=[1,2,3]",
                "--set",
                "rates=[1,2,3]",
                "--out",
                "o.parquet",
            ],
        ),
        "has 5 agents, scenario has 3 BSs",
    )
    shutil.copytree(ckpt, "damaged")
    Path("damaged/agents.msgpack").write_bytes(b"\x93not msgpack at all")
    check(
        runner.invoke(
            main, ["run", "--scheduler", "drlcoedge", "--checkpoint", "damaged", "--out", "o.parquet"]
        ),
        "does not fit",
    )
    Path("damaged/config.json").write_text("{")
    check(
        runner.invoke(
            main, ["run", "--scheduler", "drlcoedge", "--checkpoint", "damaged", "--out", "o.parquet"]
        ),
        "cannot be read",
    )


def test_good_input_next_to_the_bad_works(work):
    """The same commands with the input corrected give results (the refusals are not over-eager)."""
    runner = CliRunner()
    ok = runner.invoke(main, ["run", "--scheduler", "plugins:Plain", *SMALL, "--out", "plain.parquet"])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(
        main, ["run", "--scheduler", "local", *SMALL, "--out", "existing.parquet", "--force"]
    )
    assert again.exit_code == 0, again.output
    note = runner.invoke(
        main, ["run", "--scheduler", "local", "--set", "arrival_prob=0", *SMALL, "--out", "n.parquet"]
    )
    assert note.exit_code == 0 and "no task arrived in 1 of 1 episode(s)" in note.output


def test_debug_shows_the_traceback(work):
    result = CliRunner().invoke(
        main, ["--debug", "run", "--scheduler", "plugins:Crashing", *SMALL, "--out", "o.parquet"]
    )
    assert result.exit_code != 0 and isinstance(result.exception, Exception)
    assert not isinstance(result.exception, SystemExit)


def test_output_files_follow_the_umask(work):
    import os

    old = os.umask(0o022)
    try:
        assert (
            CliRunner().invoke(main, ["run", "--scheduler", "local", *SMALL, "--out", "u.parquet"]).exit_code
            == 0
        )
    finally:
        os.umask(old)
    assert (Path("u.parquet").stat().st_mode & 0o777) == 0o644
