"""Command line: ``mecsim run``, ``train``, ``schedulers``, ``config``, ``sweep``, ``plot``, ``cartpole``, ``aigc``,
``prototype``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from .backends import DEFAULT_ENGINE, ENGINES
from .config import PRESETS, ConfigError, Scenario, load_scenario, parse_assignment
from .plugins import available_schedulers
from .results import write_parquet, write_text
from .scheduling import SchedulerError


def _overrides(assignments: tuple[str, ...]) -> dict[str, Any]:
    return dict(parse_assignment(a) for a in assignments)


def scenario_from_options(config: str | None, sets: tuple[str, ...], **fields: Any) -> Scenario:
    """Scenario from an optional TOML file, ``--set`` overrides, then explicit options that are not None."""
    overrides = _overrides(sets)
    overrides.update({k: v for k, v in fields.items() if v is not None})
    return load_scenario(config, overrides)


DEBUG_ENV = "MECSIM_DEBUG"


class _Errors(click.Group):
    """Every failure reported as one paragraph naming what went wrong, never a traceback (``--debug``
    or $MECSIM_DEBUG=1 shows it)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 - the command line reports, --debug shows the traceback
            if ctx.params.get("debug") or os.environ.get(DEBUG_ENV):
                raise
            raise click.ClickException(_message(err)) from None


def _message(err: Exception) -> str:
    from .aigc.errors import AigcError
    from .prototype.errors import PrototypeError
    from .results import OutputError
    from .sweep.schema import SweepError

    if isinstance(err, (ConfigError, SchedulerError, SweepError, OutputError, AigcError, PrototypeError)):
        return str(err)
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror}"
    return (
        f"unexpected {type(err).__name__}: {err}\n(this is a fault in mecsim, not in your input; "
        f"run again with --debug to see where)"
    )


@click.group(cls=_Errors)
@click.version_option(package_name="mecsim")
@click.option("--debug", is_flag=True, help="show the Python traceback of an error")
def main(debug: bool) -> None:
    """mecsim: collaborative mobile edge computing for AIGC services, with pluggable schedulers."""
    # like `python -m`, let --scheduler my_module:MyClass find a user's file in the working directory
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


config_option = click.option(
    "--config", "config", type=click.Path(exists=True, dir_okay=False), help="scenario TOML file"
)
set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a scenario field (repeatable), e.g. deadline=0.5",
)


def _scenario_choice(name: str, choices: list[str], what: str):
    return click.option(
        name, type=click.Choice(choices), default=None, help=f"{what} (default: the scenario's)"
    )


model_option = _scenario_choice("--model", ["slotted", "event"], "delay model")
preset_option = _scenario_choice("--preset", list(PRESETS), "environment preset")
seed_option = click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="seed (default: the scenario's, 0)"
)
scheduler_options = click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="scheduler option (repeatable), e.g. lr=0.001",
)
force_option = click.option("--force", is_flag=True, help="overwrite existing outputs")
timing_option = click.option(
    "--timing/--no-timing",
    default=True,
    show_default=True,
    help="record wall time (off: byte-reproducible output)",
)
engine_option = click.option(
    "--engine",
    type=click.Choice(list(ENGINES)),
    default=DEFAULT_ENGINE,
    show_default=True,
    help="compiled: the JAX slot kernel (slotted model, schedulers with a JAX form); python: the SimPy engine; "
    "auto: the kernel when possible",
)


def run_options(fn):
    """The options every command that runs a scheduler shares: the scenario, the scheduler, the engine."""
    for option in (
        engine_option,
        timing_option,
        scheduler_options,
        seed_option,
        preset_option,
        model_option,
        set_option,
        config_option,
    ):
        fn = option(fn)
    return click.option("--scheduler", required=True, help="registered name or package.module:ClassName")(fn)


@main.command()
@run_options
@click.option("--episodes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True),
    default=None,
    help="load learned parameters and evaluate greedily",
)
@click.option("--out", required=True, type=click.Path(), help="per-episode parquet file")
@click.option("--tasks-out", type=click.Path(), default=None, help="per-task parquet file")
@force_option
def run(
    scheduler,
    config,
    sets,
    model,
    preset,
    seed,
    options,
    timing,
    engine,
    episodes,
    checkpoint,
    out,
    tasks_out,
    force,
):
    """Run a scheduler for some episodes and write the tidy per-episode table."""
    from .results import OutputError, prepare_output, write_parquet
    from .runner import run as run_scheduler

    scenario = scenario_from_options(config, sets, model=model, preset=preset, seed=seed)
    prepare_output(out, "--out", force=force)
    if tasks_out is not None:
        if os.path.abspath(tasks_out) == os.path.abspath(out):
            raise OutputError(
                f"--tasks-out {tasks_out!r} is the --out file; give the per-task table its own file"
            )
        prepare_output(tasks_out, "--tasks-out", force=force)
    episodes_df, tasks_df = run_scheduler(
        scenario,
        scheduler,
        episodes,
        scheduler_options=_overrides(options),
        checkpoint=checkpoint,
        phase="eval" if checkpoint else "online",
        keep_tasks=tasks_out is not None,
        timing=timing,
        progress=None,
        engine=engine,
    )
    write_parquet(episodes_df, out)
    if tasks_out is not None:
        write_parquet(tasks_df, tasks_out)
    _note_empty_episodes(episodes_df, scenario)
    mean = episodes_df["mean_makespan"].mean()
    fail = episodes_df["failure_rate"].mean()
    click.echo(
        f"{scheduler} [{scenario.model}, preset {scenario.preset}, seed {scenario.seed}]: "
        f"mean make-span {mean:.4f} s, failure rate {fail:.4f} over {episodes} episode(s) -> {out}"
    )


def _note_empty_episodes(episodes, scenario: Scenario) -> None:
    empty = int((episodes["n_tasks"] == 0).sum())
    if empty:
        click.echo(
            f"note: no task arrived in {empty} of {len(episodes)} episode(s) (arrival_prob = "
            f"{scenario.arrival_prob}, {scenario.tasks_per_slot} task slots per BS): their metrics are NaN",
            err=True,
        )


@main.command("train")
@run_options
@click.option("--episodes", type=click.IntRange(min=1), required=True, help="online training episodes")
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="output directory (episodes.parquet, checkpoint/)",
)
@click.option(
    "--eval-episodes",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="greedy episodes on fresh traces after training",
)
@force_option
def train_command(
    scheduler, config, sets, model, preset, seed, options, timing, engine, episodes, out, eval_episodes, force
):
    """Train a learning scheduler online, evaluate it greedily, save the table and a checkpoint."""
    from .results import prepare_output
    from .training import train

    scenario = scenario_from_options(config, sets, model=model, preset=preset, seed=seed)
    prepare_output(out, "--out", force=force, directory=True)
    result = train(
        scenario,
        scheduler,
        episodes,
        out_dir=out,
        eval_episodes=eval_episodes,
        options=_overrides(options),
        progress=None,
        timing=timing,
        engine=engine,
    )
    _note_empty_episodes(result.episodes, scenario)
    last = min(50, episodes)
    line = (
        f"{scheduler} [{scenario.model}, preset {scenario.preset}, seed {scenario.seed}]: "
        f"online make-span (last {last} of {episodes}) {result.online_mean(last):.4f} s"
    )
    if eval_episodes:
        line += f", greedy eval ({eval_episodes} episodes) {result.eval_mean():.4f} s"
    click.echo(f"{line}; training {result.train_wall_s:.0f} s -> {out}")


@main.command()
def schedulers() -> None:
    """List the registered scheduler plugins."""
    for name, ep in sorted(available_schedulers().items()):
        click.echo(f"{name:14s} {ep.value}")


@main.command("config")
@config_option
@set_option
def show_config(config, sets) -> None:
    """Print the validated scenario (defaults filled in) as JSON."""
    scenario = scenario_from_options(config, sets)
    click.echo(json.dumps(scenario.model_dump(mode="json"), indent=2))


@main.command("sweep")
@click.argument("experiment")
@click.option("--rerun", is_flag=True, help="recompute every cell, even those already finished")
@click.option(
    "--scheduler-address",
    default=None,
    metavar="ADDR",
    help="join this Dask scheduler (default: $MECSIM_DASK_ADDRESS, else a local cluster)",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="local cluster: worker processes (default: one per core)",
)
@click.option("--results-dir", default="results", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--dry-run",
    is_flag=True,
    help="print the cells to run and a projected wall time (from measured cells), run nothing",
)
def sweep_command(experiment, rerun, scheduler_address, workers, results_dir, dry_run) -> None:
    """Run an experiment (a name in experiments/ or a TOML path) as a parallel, resumable sweep."""
    from .sweep import SweepError, describe_plan, run_sweep

    try:
        if dry_run:
            describe_plan(experiment, results_dir=results_dir, workers=workers, echo=click.echo)
            return
        report = run_sweep(
            experiment,
            results_dir=results_dir,
            rerun=rerun,
            scheduler_address=scheduler_address,
            workers=workers,
            echo=click.echo,
        )
    except SweepError as err:
        raise click.ClickException(str(err)) from None
    if not report.ok:
        raise click.ClickException(f"{len(report.failed)} cell(s) failed (listed above); rerun to retry them")


@main.command("cartpole")
@click.option(
    "--methods", default=",".join(["dqn", "sac", "dsac", "dsac-no-noise", "mlp-matched"]), show_default=True
)
@click.option("--seeds", type=click.IntRange(min=1), default=10, show_default=True, help="seeds 0..n-1")
@click.option("--steps", type=click.IntRange(min=1), default=50_000, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=2_500, show_default=True)
@click.option("--out", default="results/cartpole", show_default=True, type=click.Path(file_okay=False))
def cartpole_command(methods, seeds, steps, eval_every, out) -> None:
    """The CartPole check: DQN, discrete SAC, DSAC and two ablations, equal step budgets (resumable)."""
    from pathlib import Path

    import pandas as pd

    from .studies import cartpole

    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in cartpole.METHODS]
    if unknown:
        raise click.BadParameter(f"{unknown}; known: {', '.join(cartpole.METHODS)}", param_hint="--methods")
    folder = Path(out)
    for method in wanted:
        path = folder / f"{method}.parquet"
        if path.exists():
            click.echo(f"{method}: done ({path})")
            continue
        write_parquet(cartpole.run(method, list(range(seeds)), steps, eval_every), path)
    runs = pd.concat([pd.read_parquet(folder / f"{m}.parquet") for m in wanted], ignore_index=True)
    table, tests = cartpole.summarise(runs)
    write_text(folder / "summary.md", cartpole.markdown(table) + "\n" + cartpole.markdown(tests))
    cartpole.plot(runs, folder / "curves.png")
    click.echo(table.to_string(index=False))
    click.echo(tests.to_string(index=False))


@main.command("plot")
@click.argument("experiment")
@click.option("--results-dir", default="results", show_default=True, type=click.Path(file_okay=False))
def plot_command(experiment, results_dir) -> None:
    """Figures (PNG, SVG) and the results table of a finished sweep."""
    from .report import plot_experiment
    from .sweep import SweepError

    try:
        written = plot_experiment(experiment, results_dir=results_dir, echo=click.echo)
    except (SweepError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    for path in written:
        click.echo(str(path))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


from .aigc.cli import aigc as aigc_group  # noqa: E402 - the subcommand group lives with the service

main.add_command(aigc_group)

from .prototype.cli import prototype as prototype_group  # noqa: E402 - the prototype's commands live with it

main.add_command(prototype_group)
