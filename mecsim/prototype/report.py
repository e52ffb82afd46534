"""The prototype run's outputs: ``tasks.parquet``, ``episodes.parquet``, ``summary.md``, figures, grid.

``tasks.parquet`` has the simulator's per-task columns (so the same analysis code reads both) plus
the measured phases, the model's make-spans for the same task (replayed and free) and the model's
phase terms. ``summary.md`` holds the scheduler comparison, the phase breakdown, Dask's overhead,
the sim-to-real figures, and the provenance.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..results import write_bytes, write_parquet, write_text
from .compare import (
    PAPER_CLAIM,
    model_phases,
    paired_reductions,
    run_capacities,
    scheduler_table,
    sim_to_real,
    simulate,
)
from .config import PrototypeConfig
from .phases import PHASES

GOALS = {"mean_error": 0.10, "task_mape": 0.15, "overhead_share": 0.05}


def _figure(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def figures(out: Path, joined: pd.DataFrame, table: pd.DataFrame, sim: pd.DataFrame) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    x = np.arange(len(table))
    ax.errorbar(x - 0.1, table["mean"], yerr=[table["mean"] - table["mean_lo"], table["mean_hi"] - table["mean"]],
                fmt="o", capsize=4, label="prototype (95 % BCa over runs)")  # fmt: skip
    sims = sim.set_index("scheduler").loc[table["scheduler"]]
    ax.plot(x + 0.1, sims["sim_free_mean_makespan"], "s", label="event model, free")
    ax.plot(x + 0.1, sims["sim_replay_mean_makespan"], "^", label="event model, replayed splits")
    ax.set_xticks(x, table["scheduler"], rotation=20)
    ax.set_ylabel("mean make-span (s)")
    ax.legend(fontsize=8)
    ax.set_title("schedulers on the prototype and in the model")
    ax = axes[1]
    means = joined.groupby("scheduler", sort=False)[[f"{p}_s" for p in PHASES]].mean().loc[table["scheduler"]]
    bottom = np.zeros(len(means))
    for p in PHASES:
        ax.bar(x, means[f"{p}_s"], bottom=bottom, label=p)
        bottom += means[f"{p}_s"].to_numpy()
    ax.set_xticks(x, means.index, rotation=20)
    ax.set_ylabel("s (mean over tasks, last sub-batch)")
    ax.legend(fontsize=8)
    ax.set_title("where the make-span goes")
    ax = axes[2]
    ok = joined["error"].isna()
    for name, g in joined[ok].groupby("scheduler", sort=False):
        ax.scatter(g["latency"], g["sim_replay_latency"], s=8, alpha=0.6, label=name)
    hi = float(np.nanmax(joined.loc[ok, ["latency", "sim_replay_latency"]].to_numpy())) if ok.any() else 1.0
    ax.plot([0, hi], [0, hi], "k--", lw=1)
    ax.set_xlabel("prototype make-span (s)")
    ax.set_ylabel("event model, same splits (s)")
    ax.legend(fontsize=8)
    ax.set_title("per task")
    fig.tight_layout()
    written.append(write_bytes(out / "prototype.png", _figure(fig)))
    plt.close(fig)
    return written


def _pct(v: float) -> str:
    return f"{100 * v:+.1f} %"


def summarise(out: Path, config: PrototypeConfig, provenance: dict) -> str:
    """Join the driver's tables with the model's predictions; write the outputs; return summary.md's text.

    The learners run in the model from the checkpoints the prototype ran (``checkpoints.json``).
    ``provenance`` may be an earlier ``provenance.json``: its comparison is left out and made anew."""
    provenance = {k: v for k, v in provenance.items() if k != "sim_to_real"}
    tasks = pd.read_parquet(out / "runs-tasks.parquet")
    subtasks = pd.read_parquet(out / "runs-subtasks.parquet")
    episodes = pd.read_parquet(out / "runs-episodes.parquet")
    calibration = json.loads((out / "calibration.json").read_text())
    checkpoints = {n: str(out / p) for n, p in json.loads((out / "checkpoints.json").read_text()).items()}
    from .calibrate import calibrated_values

    values = calibrated_values(calibration, config)
    loaded_caps = run_capacities(config, subtasks)
    joined = simulate(config, values, tasks, checkpoints, loaded_caps)
    joined = pd.concat([joined, model_phases(config, values, joined)], axis=1)
    joined.insert(0, "mode", provenance["mode"])
    write_parquet(joined, out / "tasks.parquet")
    write_parquet(episodes, out / "episodes.parquet")
    table = scheduler_table(episodes)
    sim, overall = sim_to_real(joined)
    reductions = paired_reductions(episodes)
    overhead = float(subtasks["overhead"].median())
    span = float(subtasks["span"].median())
    written = figures(out, joined, table, sim)
    sample = out / "repair-sample.npz"
    if sample.exists():
        from ..aigc.cli import grid_png

        arrays = np.load(sample)
        written.append(grid_png(arrays["original"], arrays["mask"], arrays["repaired"], out / "grid.png",
                                "repaired on the prototype's edge servers"))  # fmt: skip
    lines = [
        f"# Prototype run ({provenance['mode']} mode)",
        "",
        f"{len(tasks)} tasks, {tasks['scheduler'].nunique()} schedulers x {episodes['repetition'].nunique()} "
        f"repetitions (seeds {sorted(episodes['seed'].unique().tolist())}); every scheduler replays the same trace per seed.",
        "",
        "## Schedulers (make-span in s; 95 % BCa bootstrap interval over repetitions)",
        "",
        "| scheduler | runs | mean | 95 % CI | p95 | 95 % CI | failed | re-dispatched |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(f"| {r.scheduler} | {r.runs} | {r.mean:.3f} | {r.mean_lo:.3f}-{r.mean_hi:.3f} | {r.p95:.3f} | "
                     f"{r.p95_lo:.3f}-{r.p95_hi:.3f} | {r.failed:.1%} | {r.redispatched} |")  # fmt: skip
    if len(reductions):
        lines += ["", f"AMCoEdge's make-span reduction, paired by seed (the paper's prototype: "
                  f"{PAPER_CLAIM[0]}-{PAPER_CLAIM[1]} % against three methods):", "",
                  "| against | reduction | 95 % CI | seeds won |", "|---|---|---|---|"]  # fmt: skip
        for r in reductions.itertuples():
            lines.append(
                f"| {r.baseline} | {_pct(r.reduction)} | {_pct(r.lo)} to {_pct(r.hi)} | {r.seeds_won}/{r.seeds} |"
            )
    means = joined.groupby("scheduler", sort=False)[[f"{p}_s" for p in PHASES]].mean()
    model_cols = ["model_upload_s", "model_queueing_s", "model_compute_s", "model_download_s"]
    model = joined.groupby("scheduler", sort=False)[model_cols].mean()
    lines += ["", "## Phases of the sub-batch that ended last (mean s; the model's, same splits, in brackets)", "",
              "| scheduler | upload | queueing | compute | download | overhead (model: none) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name in means.index:
        m, mm = means.loc[name], model.loc[name]
        lines.append(f"| {name} | {m.upload_s:.3f} ({mm.model_upload_s:.3f}) | {m.queueing_s:.3f} "
                     f"({mm.model_queueing_s:.3f}) | {m.compute_s:.3f} ({mm.model_compute_s:.3f}) | "
                     f"{m.download_s:.3f} ({mm.model_download_s:.3f}) | {m.overhead_s:.3f} |")  # fmt: skip
    lines += [
        "",
        f"Dask's overhead per sub-batch (decision, making the input, the scheduler's hand-overs, `fetch`): median "
        f"{overhead * 1000:.0f} ms against a median sub-batch span of {span * 1000:.0f} ms ({overhead / span:.0%}; "
        f"goal < {GOALS['overhead_share']:.0%}). Empty-task round trip per worker: "
        f"{', '.join(f'{1000 * t:.0f}' for t in calibration['dask_round_trip_s'])} ms.",
        "",
        "## Sim-to-real (event model, calibrated scenario, same traces)",
        "",
        "| scheduler | prototype | model, same splits | model, free | mean error (same splits) | per-task MAPE |",
        "|---|---|---|---|---|---|",
    ]
    for r in sim.itertuples():
        lines.append(f"| {r.scheduler} | {r.real_mean_makespan:.3f} | {r.sim_replay_mean_makespan:.3f} | "
                     f"{r.sim_free_mean_makespan:.3f} | {_pct(r.mean_error_replay)} | {r.task_mape_replay:.1%} |")  # fmt: skip
    verdict = lambda ok: "met" if ok else "missed"  # noqa: E731
    lines += [
        "",
        f"- mean make-span error, same splits: {_pct(overall['mean_error_replay'])} "
        f"(goal within {GOALS['mean_error']:.0%}: {verdict(abs(overall['mean_error_replay']) <= GOALS['mean_error'])}); "
        f"free: {_pct(overall['mean_error_free'])}",
        f"- per-task MAPE, same splits: {overall['task_mape_replay']:.1%} "
        f"(goal {GOALS['task_mape']:.0%}: {verdict(overall['task_mape_replay'] <= GOALS['task_mape'])})",
        f"- ranking of the schedulers (model free vs prototype): Kendall tau = {overall['kendall_tau']:.2f}; "
        f"same order: {overall['same_ranking']}",
        f"- in sample, capacities fitted on the runs' own compute times "
        f"({', '.join(f'{c:.3f}' for c in loaded_caps)} cores): mean error {_pct(overall['mean_error_loaded'])}, "
        f"per-task MAPE {overall['task_mape_loaded']:.1%} (same splits; latency of finished tasks)",
        "",
        "## Calibration",
        "",
        "| ES | capacity (cores): nominal / calibrated | per-request s | link rate (Mbit/s): nominal / effective | "
        "per-transfer latency s |",
        "|---|---|---|---|---|",
    ]
    for c, link in zip(calibration["compute"], calibration["links"]):
        lines.append(f"| {c['es']} | {c['nominal_capacity']:.3f} / {c['capacity']:.3f} | {c['per_request_s']:.3f} | "
                     f"{link['nominal_rate']:.4f} / {link['rate']:.4f} | {link['latency_s']:.3f} |")  # fmt: skip
    lines += ["", "## Provenance", "", "```json", json.dumps(provenance, indent=1, default=str), "```", ""]
    text = "\n".join(lines)
    write_text(out / "summary.md", text)
    write_text(
        out / "provenance.json", json.dumps({**provenance, "sim_to_real": overall}, indent=1, default=str)
    )
    return text
