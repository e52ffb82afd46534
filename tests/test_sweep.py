"""Sweeps: grid expansion, cell identity, resume after an interruption, the dataset schema, Dask runs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest

from mecsim.config import Scenario
from mecsim.results import load
from mecsim.sweep import (
    Cell,
    SweepError,
    calibration,
    cell_hash,
    compute_cell,
    dask_client,
    estimate,
    load_experiment,
    part_path,
    run_sweep,
)
from mecsim.sweep.planning import RATE_COLUMNS, cost, expected_tasks, fixed_and_per_task, ordering_cost

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fault-injecting cell functions below

TINY = """
name = "tiny"
[run]
seeds = [0, 1]
eval_episodes = 1
[scenario]
tasks_per_slot = 3
slots = 3
[methods.local]
episodes = 2
[methods.random]
episodes = 2
preset = "randcoedge"
[methods.optimal]
episodes = 2
preset = "optimal"
[[sweep]]
name = "default"
presets = ["common", "own"]
[[sweep]]
name = "deadline"
parameter = "deadline"
values = [0.05, 1.0]
[[sweep]]
name = "capacity"
parameter = "capacities"
values = [[10, 20, 30, 40, 50], [10, 30, 50, 70, 90]]
x = [50, 90]
"""
# default: 3 methods x common + 2 own presets = 5 per seed; deadline 0.05 adds 3; capacity F=90 adds 3
TINY_CELLS = 2 * (5 + 3 + 3)

REQUIRED_COLUMNS = {
    "experiment",
    "sweep",
    "swept_value",
    "sweeps",
    "cell_id",
    "method",
    "method_kind",
    "engine",
    "scheduler",
    "model",
    "preset",
    "seed",
    "episode",
    "phase",
    "mean_makespan",
    "failure_rate",
    "n_tasks",
    "capacities",
    "deadline",
    "arrival_prob",
    "tasks_per_slot",
    "variant.tau_clamp",
    "mecsim_version",
    "git_commit",
    "config_hash",
}


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster: 2 single-threaded worker processes, shared by the tests of this module."""
    with dask_client(workers=2) as c:
        yield c


def _thread_affinities() -> list[list[int]]:
    return [sorted(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/self/task")]


def test_local_workers_are_pinned_each_to_its_own_core(client):
    """Every thread of each local worker runs on one core, and the workers on different cores (where
    there are as many cores as workers)."""
    cores = sorted(os.sched_getaffinity(0))
    per_worker = client.run(_thread_affinities)
    assert len(per_worker) == 2
    pins = []
    for threads in per_worker.values():
        assert {tuple(t) for t in threads} == {tuple(threads[0])} and len(threads[0]) == 1
        pins.append(threads[0][0])
    assert set(pins) <= set(cores)
    assert len(set(pins)) == min(2, len(cores))


def _minor_faults_of_a_reused_buffer() -> tuple[int, str | None]:
    """Minor page faults of 100 allocations of the same 2 MiB buffer, each filled and freed, and the worker's
    MALLOC_TRIM_THRESHOLD_."""
    import resource

    import numpy as np

    np.ones(1 << 18).sum()  # the first free lets glibc raise its mmap threshold above 2 MiB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        np.ones(1 << 18).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, os.environ.get(
        "MALLOC_TRIM_THRESHOLD_"
    )


def test_local_workers_reuse_freed_memory_instead_of_faulting_it_in_again(client):
    """Dask's default MALLOC_TRIM_THRESHOLD_ froze glibc's mmap threshold at 128 kB, so each 2 MiB buffer was
    mapped afresh and faulted in page by page (512 faults each, 51 300 for the loop); reused, it costs a few."""
    for faults, trim in client.run(_minor_faults_of_a_reused_buffer).values():
        assert trim is None
        assert faults < 100 * 512 // 10


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["cell_id", "phase", "episode"]).reset_index(drop=True)


# -- grid expansion ------------------------------------------------------------------------------
def test_seeds_grid_extends_the_paper_default_point():
    cells = load_experiment("seeds").cells()
    assert len(cells) == 16 * (
        5 * 2 - 1
    )  # 5 methods x (common, own), AMCoEdge's own preset is the common one
    assert {c.scenario.seed for c in cells} == set(range(16))
    paper = load_experiment("paper")
    default = set(paper.memberships(paper.cells()).query("sweep == 'default'")["cell_id"])
    # seeds 0-9 of the slotted default point are the paper's own cells: the same ids
    first = {c.cell_id for c in cells if c.scenario.seed < 10}
    assert len(first) == 10 * 9 and first <= default


def test_paper_grid_counts_and_values():
    exp = load_experiment("paper")
    cells = exp.cells()
    # 31 distinct slotted points (10 + 10 + 10 + 4 sweep values, the default point shared by all four)
    # x 7 methods, + 4 own presets differing from the common one, + 7 event cells, + ddrl-amsa at the slotted
    # default point only (its own preset is the common one); x 10 seeds
    assert len(cells) == 10 * (31 * 7 + 4 + 7 + 1)
    amsa = [c for c in cells if c.method == "ddrl-amsa"]
    assert {(c.scenario.model, c.scenario.deadline, c.scenario.arrival_prob) for c in amsa} == {
        ("slotted", 1.0, 0.3)
    }
    assert {c.scenario.seed for c in cells} == set(range(10))
    episodes = {c.method: c.episodes for c in cells}
    assert episodes == {
        "random": 50,
        "optimal": 50,
        "local": 50,
        "best-single": 50,
        "amcoedge": 500,
        "smcoedge": 300,
        "drlcoedge": 400,
        "ddrl-amsa": 500,
    }
    assert {c.method for c in cells if c.learner} == {"amcoedge", "smcoedge", "drlcoedge", "ddrl-amsa"}
    assert {c.engine for c in cells} == {"auto"}  # event cells fall back to the Python path by themselves
    # a per-method engine overrides the [run] engine
    quick = {c.method: c.engine for c in load_experiment("quick").cells()}
    assert quick["optimal"] == "auto" and quick["random"] == "python"
    members = exp.memberships(cells)
    deadline_ids = set(members.loc[members["sweep"] == "deadline", "cell_id"])
    by_id = {c.cell_id: c for c in cells}
    assert sorted({by_id[i].scenario.deadline for i in deadline_ids}) == pytest.approx(
        [i / 10 for i in range(1, 11)]
    )
    assert sorted(
        {by_id[i].scenario.tasks_per_slot for i in members.loc[members.sweep == "tasks_per_slot", "cell_id"]}
    ) == list(range(10, 101, 10))
    caps = {by_id[i].scenario.capacities for i in members.loc[members.sweep == "capacity", "cell_id"]}
    assert caps == {(10, 15, 20, 25, 30), (10, 20, 30, 40, 50), (10, 25, 40, 55, 70), (10, 30, 50, 70, 90)}
    assert sorted(members.loc[members.sweep == "capacity", "swept_value"].unique()) == [30, 50, 70, 90]
    # the sweeps use the common preset and the slotted model; the default point adds own presets and the event model
    sweep_cells = [by_id[i] for i in members.loc[members.sweep != "default", "cell_id"]]
    assert {c.scenario.preset for c in sweep_cells if "convergence" not in c.sweeps} == {"amcoedge"}
    default = [by_id[i] for i in members.loc[members.sweep == "default", "cell_id"]]
    assert {(c.method, c.scenario.preset) for c in default if c.scenario.model == "slotted"} >= {
        ("random", "randcoedge"),
        ("optimal", "optimal"),
        ("smcoedge", "smcoedge"),
        ("drlcoedge", "drlcoedge"),
        ("amcoedge", "amcoedge"),
        ("local", "amcoedge"),
    }
    # the event model's default point: the AMCoEdge paper's methods (ddrl-amsa trains on the slotted kernel only)
    assert {c.method for c in default if c.scenario.model == "event"} == set(exp.methods) - {"ddrl-amsa"}
    # the default point lies on every sweep and is computed once
    amc = [c for c in cells if c.method == "amcoedge" and c.scenario == Scenario(seed=0)]
    assert len(amc) == 1
    assert set(amc[0].sweeps) == {
        "default",
        "convergence",
        "deadline",
        "arrival_prob",
        "tasks_per_slot",
        "capacity",
    }


def test_tiny_grid_and_event_experiment(tiny: Path):
    exp = load_experiment(tiny)
    cells = exp.cells()
    assert len(cells) == TINY_CELLS
    assert len({c.cell_id for c in cells}) == len(cells)
    event = load_experiment("paper-event").cells()
    assert {c.scenario.model for c in event} == {"event"} and len(event) == 10 * 31 * 7


def test_invalid_experiment_is_reported(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace('parameter = "deadline"', 'parameter = "deadlin"'))
    with pytest.raises(SweepError, match="deadlin"):
        load_experiment(bad).cells()
    bad.write_text(TINY + "\n[methods.nope]\nepisodes = 1\nbogus = 3\n")
    with pytest.raises(SweepError, match="bogus"):
        load_experiment(bad)
    with pytest.raises(SweepError, match="no experiment"):
        load_experiment("no-such-experiment")


# -- cell identity -------------------------------------------------------------------------------
def test_cell_hash_is_stable_across_processes(tiny: Path):
    ids = [c.cell_id for c in load_experiment(tiny).cells()]
    code = (
        "import json, sys; from mecsim.sweep import load_experiment;"
        f"print(json.dumps([c.cell_id for c in load_experiment({str(tiny)!r}).cells()]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout) == ids


def test_cell_hash_changes_with_anything_that_changes_the_output():
    base = Cell(
        "x", Scenario(), "random", "random", 50, False, 10, {}, "python", False, [("default", float("nan"))]
    )
    variants = [
        Cell("x", Scenario(seed=1), "random", "random", 50, False, 10, {}, "python", False),
        Cell("x", Scenario(deadline=0.5), "random", "random", 50, False, 10, {}, "python", False),
        Cell("x", Scenario(preset="randcoedge"), "random", "random", 50, False, 10, {}, "python", False),
        Cell("x", Scenario(model="event"), "random", "random", 50, False, 10, {}, "python", False),
        Cell(
            "x",
            Scenario(variant={"tau_clamp": "none"}),
            "random",
            "random",
            50,
            False,
            10,
            {},
            "python",
            False,
        ),
        Cell("x", Scenario(), "optimal", "optimal", 50, False, 10, {}, "python", False),
        Cell("x", Scenario(), "random", "random", 51, False, 10, {}, "python", False),
        Cell("x", Scenario(), "random", "random", 50, False, 10, {"k": 1}, "python", False),
        Cell("x", Scenario(), "random", "random", 50, False, 10, {}, "compiled", False),
        Cell("x", Scenario(), "random", "random", 50, False, 10, {}, "python", True),
    ]
    ids = {base.cell_id} | {v.cell_id for v in variants}
    assert len(ids) == 1 + len(variants)
    # labels and the experiment name are not part of the identity; eval episodes only matter for learners
    same = [
        Cell(
            "other", Scenario(), "random", "random", 50, False, 10, {}, "python", False, [("deadline", 1.0)]
        ),
        Cell("x", Scenario(), "random", "random", 50, False, 3, {}, "python", False),
    ]
    assert all(c.cell_id == base.cell_id for c in same)
    assert cell_hash({"a": 1, "b": [1.5, 2]}) == cell_hash({"b": [1.5, 2], "a": 1})


# -- running -------------------------------------------------------------------------------------
def test_sweep_on_local_cluster_resumes_after_an_interruption(client, tiny: Path, tmp_path: Path):
    quiet = dict(client=client, progress=False, echo=lambda *_: None)
    full = run_sweep(tiny, results_dir=tmp_path / "uninterrupted", **quiet)
    assert full.ok and len(full.computed) == TINY_CELLS and full.skipped == 0
    reference = _sorted(load(tmp_path / "uninterrupted" / "tiny"))

    # the parquet schema: one row per (cell, episode, phase), every parameter and the provenance as columns
    assert REQUIRED_COLUMNS <= set(reference.columns)
    assert len(reference) == TINY_CELLS * 2
    assert not reference.duplicated(["cell_id", "phase", "episode"]).any()
    assert set(reference["sweep"]) == {"default", "deadline", "capacity"}
    assert reference.loc[reference["sweep"] == "capacity", "swept_value"].unique().tolist() == [90.0]
    assert reference["experiment"].unique().tolist() == ["tiny"]

    # every computed cell's wall time is logged; the dry run projects from those measurements
    rates = calibration(tmp_path / "uninterrupted")
    assert set(rates["method"]) == {"local", "random", "optimal"} and rates["cells"].sum() == TINY_CELLS
    # each line says which engine the cell's episodes ran on, and the rates are kept by it
    timings = pd.read_csv(tmp_path / "uninterrupted" / "tiny" / "timings.csv").set_index("cell_id")
    used = reference.groupby("cell_id")["engine_used"].agg(lambda s: "+".join(sorted(s.unique())))
    assert timings["engine_used"].to_dict() == used.to_dict()
    assert set(rates["engine"]) == set(used)
    cells = load_experiment(tiny).cells()
    seconds, unknown = estimate(cells, rates)
    assert seconds > 0 and unknown == []
    # batches are ordered by measured seconds where a rate is known, by the rough cost otherwise
    order = ordering_cost(cells, rates)
    assert sum(order.values()) == pytest.approx(seconds)
    slower = rates.assign(
        s_per_task_episode=rates["s_per_task_episode"].where(rates["method"] != "local", 1.0)
    )
    local = next(c for c in cells if c.method == "local")
    assert ordering_cost([local], slower)[local.cell_id] == pytest.approx(
        local.episodes * expected_tasks(local.scenario)
    )
    assert ordering_cost([local], rates.iloc[0:0]) == {local.cell_id: cost(local)}
    # an "auto" cell is priced at the kernel's rate where the method has one, else at the SimPy path's
    both = pd.DataFrame(
        [
            ("local", local.scenario.model, "python", False, 0.0, 2.0, 1),
            ("local", local.scenario.model, "compiled", False, 0.0, 1.0, 1),
        ],
        columns=RATE_COLUMNS,
    )
    work = local.episodes * expected_tasks(local.scenario)
    assert local.engine == "auto"
    assert ordering_cost([local], both)[local.cell_id] == pytest.approx(work)
    assert ordering_cost([local], both.iloc[:1])[local.cell_id] == pytest.approx(2 * work)
    # a cell with faults is priced from cells with faults only (they cost the kernel several times more)
    assert not timings["faults"].any()
    outages = {"processes": [{"target": "server", "mean_up": 8.0, "mean_down": 2.0}]}
    faulty = dataclasses.replace(local, scenario=local.scenario.replace(faults=outages))
    assert ordering_cost([faulty], both)[faulty.cell_id] == cost(faulty)
    with_faults = pd.concat([both, both.iloc[1:].assign(faults=True, s_per_task_episode=5.0)])
    assert ordering_cost([faulty], with_faults)[faulty.cell_id] == pytest.approx(5 * work)
    assert ordering_cost([local], with_faults)[local.cell_id] == pytest.approx(work)

    # simulate an interruption: one finished part lost, a temporary file of a write in progress left behind
    out = tmp_path / "interrupted"
    first = run_sweep(tiny, results_dir=out, **quiet)
    assert first.ok
    victim = sorted(first.computed)[3]
    part_path(out / "tiny", victim).unlink()
    stray = out / "tiny" / f".part-{victim}.parquet.abc123.tmp"
    stray.write_bytes(b"half a parquet file")
    resumed = run_sweep(tiny, results_dir=out, **quiet)
    assert resumed.ok
    assert resumed.computed == [victim] and resumed.skipped == TINY_CELLS - 1
    assert not stray.exists() and resumed.removed_temp == [stray.name]
    pd.testing.assert_frame_equal(_sorted(load(out / "tiny")), reference)

    # nothing left to do; --rerun recomputes everything and gives the same data
    again = run_sweep(tiny, results_dir=out, **quiet)
    assert again.computed == [] and again.skipped == TINY_CELLS
    forced = run_sweep(tiny, results_dir=out, rerun=True, **quiet)
    assert len(forced.computed) == TINY_CELLS
    pd.testing.assert_frame_equal(_sorted(load(out / "tiny")), reference)


def test_membership_changes_relabel_finished_parts(client, tiny: Path, tmp_path: Path):
    quiet = dict(client=client, progress=False, echo=lambda *_: None)
    exp = load_experiment(tiny)
    few = tmp_path / "few.toml"
    few.write_text(TINY.split('[[sweep]]\nname = "deadline"')[0].replace('presets = ["common", "own"]', ""))
    few_report = run_sweep(
        few, results_dir=tmp_path, **quiet
    )  # same name "tiny": default point, common preset only
    assert len(few_report.computed) == 6
    report = run_sweep(exp, results_dir=tmp_path, **quiet)
    assert len(report.computed) == TINY_CELLS - 6
    df = load(tmp_path / "tiny")
    local = df[(df["method"] == "local") & (df["deadline"] == 1.0) & (df["capacities"].map(max) == 50)]
    assert local["sweeps"].map(list).map(tuple).unique().tolist() == [("default", "deadline", "capacity")]
    assert len(report.relabelled) == 6


def _fails_for_optimal(payload):
    if payload["method"] == "optimal" and payload["scenario"]["preset"] == "optimal":
        raise RuntimeError("injected failure")
    return compute_cell(payload)


def _dies_once(payload):
    marker = Path(payload["_marker_dir"]) / payload["cell_id"]
    if (
        payload["method"] == "random"
        and payload["scenario"]["deadline"] < 0.1
        and payload["scenario"]["seed"] == 0
        and not marker.exists()
    ):
        marker.write_text("died")
        os._exit(1)  # the worker process dies in the middle of the cell
    return compute_cell(payload)


def test_failed_cells_are_reported_never_dropped(client, tiny: Path, tmp_path: Path):
    quiet = dict(client=client, progress=False, echo=lambda *_: None)
    report = run_sweep(tiny, results_dir=tmp_path, cell_fn=_fails_for_optimal, **quiet)
    assert not report.ok
    assert len(report.failed) == 2  # optimal on its own preset, 2 seeds
    assert all("injected failure" in e for e in report.failed.values())
    assert report.retried == {}  # an error raised by the cell's code would happen again: not retried
    assert len(report.computed) == TINY_CELLS - 2
    assert not any(part_path(tmp_path / "tiny", c).exists() for c in report.failed)
    # the next run only retries the failed cells
    report = run_sweep(tiny, results_dir=tmp_path, **quiet)
    assert report.ok and len(report.computed) == 2


def test_a_lost_worker_is_retried_and_reported(client, tiny: Path, tmp_path: Path, monkeypatch):
    import mecsim.sweep as sweep

    original = sweep.Cell.payload
    monkeypatch.setattr(sweep.Cell, "payload", lambda self: {**original(self), "_marker_dir": str(tmp_path)})
    report = run_sweep(
        tiny, results_dir=tmp_path, client=client, cell_fn=_dies_once, progress=False, echo=lambda *_: None
    )
    assert report.ok and len(report.computed) == TINY_CELLS
    died = {p.name for p in tmp_path.iterdir() if len(p.name) == 16}
    assert len(died) == 1  # random at deadline 0.05, seed 0
    assert died <= set(report.computed)
    assert died <= set(report.retried)  # started again after its worker died


def test_cli_dry_run_lists_the_plan(tiny: Path, tmp_path: Path):
    from click.testing import CliRunner

    from mecsim.cli import main

    result = CliRunner().invoke(main, ["sweep", str(tiny), "--dry-run", "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{TINY_CELLS} cells, 0 finished, {TINY_CELLS} to run" in result.output
    assert "not included: 22 cells with no measurement yet" in result.output
    bad = CliRunner().invoke(main, ["sweep", "no-such-experiment", "--dry-run"])
    assert bad.exit_code != 0 and "no experiment" in bad.output


# -- batches: cells sharing compiled kernel calls --------------------------------------------------
BATCHED = """
name = "batched"
[run]
seeds = [0, 1]
engine = "auto"
eval_episodes = 1
[scenario]
tasks_per_slot = 3
slots = 4
[methods.optimal]
episodes = 2
[methods.local]
episodes = 2
engine = "python"
[methods.amcoedge]
episodes = 3
learner = true
options = { learn_start = 2, learn_every = 1, batch_size = 4 }
[[sweep]]
name = "default"
models = ["slotted"]
[[sweep]]
name = "deadline"
parameter = "deadline"
values = [0.05, 0.5]
[[sweep]]
name = "arrival_prob"
parameter = "arrival_prob"
values = [0.3, 0.9]
methods = ["optimal", "local"]
"""


def test_batches_group_only_cells_that_can_share_kernel_calls():
    from dataclasses import replace

    from mecsim.backends.kernel import Spec
    from mecsim.sweep.planning import BATCH_CELLS, BATCH_SPREAD, plan_batches, scan_length

    cells = load_experiment("paper").cells()
    batches = plan_batches(cells)
    assert sorted(c.cell_id for b in batches for c in b) == sorted(c.cell_id for c in cells)  # each cell once
    assert any(len(b) > 1 for b in batches)
    for batch in batches:
        first = batch[0]
        if first.engine == "python" or first.scenario.faults.active:
            assert len(batch) == 1
        assert len(batch) <= BATCH_CELLS
        # N and the drop window may differ (the group takes the largest)
        shape = lambda c: replace(Spec.from_scenario(c.scenario), tasks_per_slot=0, window=0)  # noqa: E731
        assert {(c.method, c.episodes, c.learner, shape(c)) for c in batch} == {
            (first.method, first.episodes, first.learner, shape(first))
        }
        lengths = [scan_length(c) for c in batch]
        assert max(lengths) <= BATCH_SPREAD * min(lengths)
    # the own presets' accounting flags differ from the common preset's: never in one batch
    assert all(len({c.scenario.preset for c in b}) == 1 for b in batches)
    # the tasks-per-BS sweep shares batches across N
    assert any(len({c.scenario.tasks_per_slot for c in b}) > 1 for b in batches)
    # event-model cells share kernel calls too
    assert any(len(b) > 1 and b[0].scenario.model == "event" for b in batches)


def test_learners_with_a_state_shaped_by_n_batch_only_cells_of_one_n():
    """ddrl-amsa's latent action memory is (slots, B, N): mixing N in a batch failed to stack the states
    (a paper-ddrl run lost 39 cells to it), while AMCoEdge's DQN state does not depend on N."""
    from mecsim.sweep.planning import plan_batches

    cells = load_experiment("paper-ddrl").cells()
    batches = plan_batches(cells)
    amsa = [b for b in batches if b[0].method == "ddrl-amsa"]
    assert amsa and all(len({c.scenario.tasks_per_slot for c in b}) == 1 for b in amsa)
    assert any(len(b) > 1 for b in amsa)
    dqn = [b for b in batches if b[0].method == "amcoedge"]
    assert any(len({c.scenario.tasks_per_slot for c in b}) > 1 for b in dqn)


def test_a_plugin_can_cap_its_batches_so_seeds_spread_over_the_workers():
    """The SAC family's cost per seed does not fall with larger batches: 8 seeds run as two batches of 4 (one
    per worker of a 2-core machine) and paper's 10 as 4 + 4 + 2; AMCoEdge keeps batches of up to 24."""
    from mecsim.sweep.planning import BATCH_CELLS, batch_limit, plan_batches

    assert batch_limit("ddrl-amsa") == 4 and batch_limit("amcoedge") == BATCH_CELLS
    dedgeai = plan_batches(load_experiment("dedgeai").cells())
    learners = {"ddrl-ats", "d2sac-ts", "sac-ts", "dqn-ts"}
    assert sorted(len(b) for b in dedgeai if b[0].method in learners) == [4] * 8
    amsa = [b for b in plan_batches(load_experiment("amsa").cells()) if b[0].method == "ddrl-amsa"]
    assert sorted(len(b) for b in amsa) == [4, 4]
    paper = plan_batches(load_experiment("paper").cells())
    assert sorted(len(b) for b in paper if b[0].method == "ddrl-amsa") == [2, 4, 4]
    assert max(len(b) for b in paper if b[0].method == "amcoedge") > 4


@pytest.mark.parametrize("bad", [0, -2, 2.5, "4", True])
def test_a_bad_batch_cap_is_refused_naming_the_plugin(monkeypatch, bad):
    from mecsim.sweep import planning

    class Capped:
        sweep_batch_cells = bad

    monkeypatch.setattr(planning, "resolve_scheduler", lambda name: Capped)
    planning.batch_limit.cache_clear()
    try:
        with pytest.raises(SweepError, match=r"'capped': sweep_batch_cells must be a whole number >= 1, got"):
            planning.batch_limit("capped")
    finally:
        planning.batch_limit.cache_clear()


def test_batched_sweep_matches_cells_run_alone_and_resumes_bit_identically(client, tmp_path: Path):
    import numpy as np

    from mecsim.sweep import plan_batches

    path = tmp_path / "batched.toml"
    path.write_text(BATCHED)
    cells = load_experiment(path).cells()
    sizes = sorted(len(b) for b in plan_batches(cells))
    assert sizes[-1] >= 4 and sizes[0] == 1  # optimal and amcoedge cells batched; python-engine cells alone

    quiet = dict(client=client, progress=False, echo=lambda *_: None)
    batched = run_sweep(path, results_dir=tmp_path / "batched", **quiet)
    assert batched.ok and len(batched.computed) == len(cells)
    reference = _sorted(load(tmp_path / "batched" / "batched"))
    alone = run_sweep(path, results_dir=tmp_path / "alone", cell_fn=compute_cell, **quiet)
    assert alone.ok
    single = _sorted(load(tmp_path / "alone" / "batched"))
    assert reference["cell_id"].tolist() == single["cell_id"].tolist()
    numeric = [c for c in reference.columns if reference[c].dtype.kind == "f"]
    np.testing.assert_allclose(reference[numeric].to_numpy(), single[numeric].to_numpy(), rtol=0, atol=1e-12)
    other = [c for c in reference.columns if c not in numeric]
    pd.testing.assert_frame_equal(reference[other], single[other])

    # a batch with one part lost runs again whole, writes only the missing part, bit-identical
    out = tmp_path / "batched" / "batched"
    amc = sorted(
        reference.loc[
            (reference["method"] == "amcoedge") & (reference["model"] == "slotted"), "cell_id"
        ].unique()
    )
    victim = amc[1]
    part_path(out, victim).unlink()
    resumed = run_sweep(path, results_dir=tmp_path / "batched", **quiet)
    assert resumed.ok and resumed.computed == [victim]
    pd.testing.assert_frame_equal(_sorted(load(out)), reference)


def test_an_experiment_extends_another(tiny: Path, tmp_path: Path):
    child = tmp_path / "child.toml"
    child.write_text(
        'extends = "tiny.toml"\nname = "child"\n[run]\nseeds = [3]\n[methods.optimal]\nepisodes = 5\n'
        '[[sweep]]\nname = "default"\n'
    )
    parent, exp = load_experiment(tiny), load_experiment(child)
    assert exp.name == "child" and exp.seeds == [3]
    assert exp.eval_episodes == parent.eval_episodes  # [run] merged key by key
    assert (
        exp.methods["optimal"].episodes == 5 and exp.methods["optimal"].preset == "optimal"
    )  # method merged
    assert set(exp.methods) == set(parent.methods)
    assert [b.name for b in exp.blocks] == ["default"]  # the child's blocks replace the parent's
    assert exp.scenario == parent.scenario
    loop = tmp_path / "loop.toml"
    loop.write_text(child.read_text().replace('extends = "tiny.toml"', 'extends = "loop.toml"'))
    with pytest.raises(SweepError, match="extends it back"):
        load_experiment(loop)
    loop.write_text(child.read_text().replace('extends = "tiny.toml"', 'extends = "nowhere"'))
    with pytest.raises(SweepError, match="no experiment 'nowhere'"):
        load_experiment(loop)


def test_a_corrupt_part_is_set_aside_and_recomputed(client, tiny: Path, tmp_path: Path):
    from click.testing import CliRunner

    from mecsim.cli import main
    from mecsim.report import plot_experiment

    quiet = dict(client=client, progress=False, echo=lambda *_: None)
    assert run_sweep(tiny, results_dir=tmp_path, **quiet).ok
    out = tmp_path / "tiny"
    victim = sorted(out.glob("part-*.parquet"))[0]
    good = pd.read_parquet(victim)
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])  # a copy cut short
    dry = CliRunner().invoke(main, ["sweep", str(tiny), "--dry-run", "--results-dir", str(tmp_path)])
    assert "1 to run" in dry.output and victim.name in dry.output
    notes: list[str] = []
    plot_experiment(load_experiment(tiny), tmp_path, echo=notes.append)
    assert any(victim.name in n for n in notes)
    report = run_sweep(tiny, results_dir=tmp_path, **quiet)
    assert report.ok and report.computed == [victim.stem.removeprefix("part-")]
    assert report.corrupt == [victim.name + ".corrupt"] and (out / report.corrupt[0]).exists()
    pd.testing.assert_frame_equal(
        pd.read_parquet(victim).drop(columns=["git_commit"]), good.drop(columns=["git_commit"])
    )


def test_calibration_fits_a_fixed_part_and_a_part_per_task(tmp_path):
    """Seconds per episode = 0.05 + 2e-5 x tasks at three loads: the fit recovers both parts, so a lightly
    loaded cell is not priced as a tenth of a heavily loaded one; one load alone falls back to proportional."""
    tasks = [1500.0, 4500.0, 15000.0]
    lines = [
        {
            "cell_id": f"c{i}",
            "method": "amcoedge",
            "model": "event",
            "engine": "auto",
            "engine_used": "compiled",
            "faults": False,
            "episodes": 500,
            "expected_tasks_per_episode": n,
            "wall_s": 500 * (0.05 + 2e-5 * n),
        }
        for i, n in enumerate(tasks)
    ]
    (tmp_path / "x").mkdir()
    pd.DataFrame(lines).to_csv(tmp_path / "x" / "timings.csv", index=False)
    rates = calibration(tmp_path)
    (row,) = rates.itertuples()
    assert (row.s_per_episode, row.s_per_task_episode, row.cells) == (
        pytest.approx(0.05),
        pytest.approx(2e-5),
        3,
    )
    # one load: proportional, at that load's rate
    assert fixed_and_per_task(pd.Series([4500.0]).to_numpy(), pd.Series([0.14]).to_numpy()) == (
        0.0,
        pytest.approx(0.14 / 4500),
    )
    # a fit that would need a negative part falls back to proportional too (median rate)
    a, b = fixed_and_per_task(pd.Series([1000.0, 2000.0]).to_numpy(), pd.Series([0.1, 0.5]).to_numpy())
    assert a == 0.0 and b == pytest.approx((0.1 / 1000 + 0.5 / 2000) / 2)
