"""Where a task's time went, from Dask's task stream: upload, queueing, compute, download, overhead.

For one sub-batch (tasks ``part`` on the BS's worker, ``repair`` on the ES, ``fetch`` back on the
BS's worker) the task stream records each task's compute interval and the transfers of its inputs:

* upload — the transfers of ``repair``'s input (0 for the BS's own ES);
* queueing — from the input's arrival at the ES (or ``part``'s end) to ``repair``'s start: work
  ahead of it at that ES, and the scheduler's hand-over;
* compute — ``repair``'s compute interval;
* download — the transfers of ``fetch``'s input (0 for the BS's own ES);
* overhead — what is left of the sub-batch's span from the task's arrival: the decision, making
  the input, the scheduler's hops between the three tasks, and ``fetch`` itself.

A task's phases are those of its sub-batch that ended last (the one that set its make-span).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PHASES = ("upload", "queueing", "compute", "download", "overhead")
DETAIL = ("input_ready", "before_upload", "before_download", "after_download")


def intervals(record: dict | None, action: str) -> list[tuple[float, float]]:
    """(start, stop) of a task-stream record's ``action`` ("compute" or "transfer"); none for no record."""
    if record is None:
        return []
    return [(s["start"], s["stop"]) for s in record.get("startstops", ()) if s.get("action") == action]


def subtask_phases(stream: list[dict], subtasks, arrivals: dict[int, float]) -> pd.DataFrame:
    """One row per finished sub-batch: its task row, ES, images, phases (s) and span from arrival (s)."""
    by_key = {str(r["key"]): r for r in stream}
    rows = []
    for sub in subtasks:
        if sub.end is None:
            continue
        part, repair, fetch = (by_key.get(str(sub.keys[name])) for name in ("part", "repair", "fetch"))
        computes = intervals(repair, "compute")
        if not computes:
            continue  # the stream lost it (a worker restarted): no phases for this one
        c_start, c_stop = computes[0]
        uploads = intervals(repair, "transfer")
        downloads = intervals(fetch, "transfer")
        part_done = max((stop for _, stop in intervals(part, "compute")), default=c_start)
        ready = max([part_done] + [stop for _, stop in uploads])
        span = sub.end - arrivals[sub.k]
        phase = {
            "upload": sum(b - a for a, b in uploads),
            "queueing": max(c_start - ready, 0.0),
            "compute": c_stop - c_start,
            "download": sum(b - a for a, b in downloads),
        }
        phase["overhead"] = span - sum(phase.values())
        # the overhead's parts: until the input exists; hand-overs around the upload and the download
        detail = {
            "input_ready": part_done - arrivals[sub.k],
            "before_upload": (uploads[0][0] - part_done) if uploads else 0.0,
            "before_download": (downloads[0][0] - c_stop) if downloads else 0.0,
            "after_download": sub.end - (downloads[-1][1] if downloads else c_stop),
        }
        rows.append({"row": sub.k, "es": sub.es, "images": sub.images, "steps": sub.steps, "attempt": sub.attempt,
                     "span": span, "end": sub.end, **phase, **detail})  # fmt: skip
    return pd.DataFrame(
        rows, columns=["row", "es", "images", "steps", "attempt", "span", "end", *PHASES, *DETAIL]
    )


def task_phases(sub: pd.DataFrame, n_tasks: int) -> pd.DataFrame:
    """Per task row: the phases of the sub-batch that ended last (NaN where none finished)."""
    out = pd.DataFrame(np.nan, index=range(n_tasks), columns=[f"{p}_s" for p in PHASES] + ["critical_es"])
    if len(sub):
        last = sub.loc[sub.groupby("row")["end"].idxmax()]
        for p in PHASES:
            out.loc[last["row"].to_numpy(), f"{p}_s"] = last[p].to_numpy()
        out.loc[last["row"].to_numpy(), "critical_es"] = last["es"].to_numpy()
    return out
