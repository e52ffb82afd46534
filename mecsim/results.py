"""Tidy results: atomic parquet writes and loading a results file or dataset directory."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` atomically: a temporary file in the same directory, then a rename.

    An interrupted write never leaves a partial file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # zstd, no column statistics and no duplicate Arrow schema (pandas' own metadata is kept,
        # so dtypes round-trip): a part is mostly metadata otherwise
        pq.write_table(table, tmp, compression="zstd", write_statistics=False, store_schema=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path) -> pd.DataFrame:
    """Load one parquet file, or every part of a dataset directory, as one DataFrame."""
    path = Path(path)
    if path.is_dir():
        parts = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if not parts:
            raise FileNotFoundError(f"{path}: no parquet parts found")
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return pd.read_parquet(path)
