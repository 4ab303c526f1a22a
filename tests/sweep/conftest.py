"""Fixtures of the sweep tests: one tiny synthetic prepared dataset per session, tiny grids."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep import make_synthetic, prepare

# Every sweep test trains at this scale: 64x64 images, 1 step per epoch, a few evaluation slices.
TINY = {"image_size": 64, "max_steps": 1, "batch_size": 4, "max_eval_slices": 16}


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A prepared directory of 5 short synthetic patients (3 train, 1 val, 1 test)."""
    root = tmp_path_factory.mktemp("sweep-data")
    make_synthetic(root / "src", patients=5, seed=3, min_slices=20, max_slices=22)
    prepare(root / "src", root / "prepared", workers=1)
    return root / "prepared"


@pytest.fixture(autouse=True)
def _scratch_runs(tmp_path, monkeypatch):
    # Trial run directories in this test's tmp dir (inherited by the local Ray the sweep starts).
    monkeypatch.setenv("ORCH_RUNS_DIR", str(tmp_path / "runs"))
    yield


def write_grid(path: Path, rows: list[dict]) -> Path:
    """A grid CSV with the union of the rows' columns (empty cells keep defaults)."""
    cols = sorted({k for r in rows for k in r}, key=lambda c: (c != "encoder", c))
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def done_outcome(**counts):
    """What a mocked ``run_sweep`` returns for the CLI tests: a sweep whose trials ended as ``counts`` say
    (default: one finished)."""
    from unittest import mock

    outcome = mock.Mock()
    outcome.counts = counts or {"finished": 1}
    outcome.summary.return_value = "sweep: done"
    return outcome
