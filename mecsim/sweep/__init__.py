"""Sweeps: an experiment file (TOML) expanded into cells, run in parallel on Dask, one parquet part per cell.

* `schema` — the experiment file's schema (pydantic), ``extends``, and where names are found;
* `cells` — `Experiment` and its `Cell` grid (a product of each block's factors), cell identity;
* `planning` — which cells can run here, how they are batched on the kernel, projected cost;
* `worker` — computing a batch of cells on a Dask worker;
* `store` — the parts directory: atomic parts, resume, labels, timings, the lock;
* `driver` — the Dask client and `run_sweep`;
* `pinning` — a local cluster's workers pinned each to its own core.
"""

from .cells import Cell, Experiment, cell_hash, load_experiment
from .driver import SweepReport, dask_client, describe_plan, run_sweep
from .planning import calibration, estimate, plan, plan_batches
from .schema import SweepError
from .store import label, part_path
from .worker import compute_batch, compute_cell

__all__ = [
    "Cell",
    "Experiment",
    "SweepError",
    "SweepReport",
    "calibration",
    "cell_hash",
    "compute_batch",
    "compute_cell",
    "dask_client",
    "describe_plan",
    "estimate",
    "label",
    "load_experiment",
    "part_path",
    "plan",
    "plan_batches",
    "run_sweep",
]
