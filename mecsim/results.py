"""Files: the one atomic writer (every output of the package goes through it) and loading results.

An interrupted write never leaves a partial file under the final name: the data go to a
hidden temporary file in the same directory (``.<name>.<random>.tmp``), which is renamed
over the target once complete. The temporary file is created like any other file, so the
result respects the umask.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd

TEMP_SUFFIX = ".tmp"


class OutputError(ValueError):
    """An output cannot be written there, or would overwrite something without being asked to."""


def prepare_output(path: str | Path, option: str, *, force: bool = False, directory: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written and overwrites nothing unless ``force``.

    ``option`` names the path for the message (e.g. ``--out``). A file output must not be a
    directory; a directory output must be absent or empty. The folder it goes to is created,
    and a file is made and removed there, so an unwritable place is found now, not after a run.
    """
    path = Path(path)
    if directory:
        if path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
            raise OutputError(
                f"{option} {str(path)!r} exists and is not an empty directory; pass --force to "
                f"write into it (files of the same name are replaced) or choose another directory"
            )
        folder = path
    else:
        if path.is_dir():
            raise OutputError(
                f"{option} {str(path)!r} is a directory; give a file name, e.g. {path / 'out.parquet'}"
            )
        if path.exists() and not force:
            raise OutputError(
                f"{option} {str(path)!r} exists; pass --force to overwrite it or choose another name"
            )
        folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".mecsim-write-check-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise OutputError(
            f"{option} {str(path)!r}: cannot write in {str(folder)!r}: {err.strerror}"
        ) from None
    return path


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    def fill(tmp: Path) -> None:
        with open(tmp, "xb") as fh:
            fh.write(data)

    return write_atomic(path, fill)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` atomically as parquet.

    zstd, no column statistics and no duplicate Arrow schema (pandas' own metadata is kept,
    so dtypes round-trip): a small part is mostly metadata otherwise.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)

    def fill(tmp: Path) -> None:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False, store_schema=False)

    return write_atomic(path, fill)


def load(path: str | Path, skip: list[Path] = ()) -> pd.DataFrame:
    """Load one parquet file, or every part of a dataset directory (but those in ``skip``), as one DataFrame."""
    path = Path(path)
    if path.is_dir():
        skipped = {Path(p) for p in skip}
        parts = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith(".") and p not in skipped)
        if not parts:
            raise FileNotFoundError(f"{path}: no parquet parts found")
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return pd.read_parquet(path)
