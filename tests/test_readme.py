"""The README's plugin example runs as printed, through the CLI, from a user's own file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from mecsim.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = ["--set", "slots=4", "--set", "tasks_per_slot=6", "--set", "arrival_prob=0.8"]


def example_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (source,) = [b for b in blocks if b.startswith("# least_loaded_pair.py")]
    return source


def test_example_is_about_twenty_lines_per_scheduler():
    body = [line for line in example_source().splitlines() if line.strip()]
    assert len(body) <= 40  # two schedulers and their imports


def test_readme_example_runs_from_a_users_file(tmp_path, monkeypatch):
    (tmp_path / "least_loaded_pair.py").write_text(example_source())
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for cls in ("LeastLoadedPair", "HalfAndHalf"):
        result = runner.invoke(
            main,
            [
                "run",
                "--scheduler",
                f"least_loaded_pair:{cls}",
                "--episodes",
                "2",
                *SMALL,
                "--out",
                f"{cls}.parquet",
                "--tasks-out",
                f"{cls}-tasks.parquet",
            ],
        )
        assert result.exit_code == 0, result.output
        tasks = pd.read_parquet(tmp_path / f"{cls}-tasks.parquet")
        subsets = np.stack(tasks["subset"].to_numpy())
        fractions = np.stack(tasks["fractions"].to_numpy())
        assert len(tasks) > 0
        assert np.allclose(fractions.sum(axis=1), 1.0)
        # the local ES always takes part, with at most one partner
        assert subsets[np.arange(len(tasks)), tasks["bs"].to_numpy()].all()
        assert (subsets.sum(axis=1) <= 2).all()
    half = pd.read_parquet(tmp_path / "HalfAndHalf-tasks.parquet")
    fractions = np.stack(half["fractions"].to_numpy())
    fastest = 4  # capacity 50 GHz
    on_fastest = half["bs"].to_numpy() == fastest
    assert np.allclose(fractions[on_fastest, fastest], 1.0)
    assert np.allclose(fractions[~on_fastest, fastest], 0.5)
