"""``orch demo``, the README's main command, end to end on a small grid: synthetic data -> prep -> a real local
Ray sweep -> a SQLite MLflow store -> tables, written once per demo; a rerun reuses everything instead of
retraining."""

from __future__ import annotations

from unittest import mock

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestrator import report
from orchestrator import workdir as wd
from orchestrator.cli import main

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_a_rerun_reuses_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "demo"
    args = ["demo", "--workdir", str(work), "--patients", "4", "--grid", "smoke", "--image-size", "32",
            "--max-steps", "1"]
    with mock.patch.object(report, "write_tables", wraps=report.write_tables) as tables:
        r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert tables.call_count == 1  # by the sweep; the demo prints them, it does not write them again
    markdown = (work / "sweeps" / "demo" / "paper_tables.md").read_text()
    assert markdown in r.output and list((work / "sweeps" / "demo").glob("plot_*.png"))
    results = pd.read_csv(work / "sweeps" / "demo" / "results.csv")
    assert len(results) == 4 and results["trial_id"].is_unique
    assert set(results["status"]) <= {"finished", "diverged"}
    assert (work / "mlflow.db").exists() and (work / "prepared" / "manifest.json").exists()
    assert wd.prepared_dir(None, work) == (work / "prepared").resolve()
    assert "| Optimizer |" in r.output or "optimizer" in r.output.lower()  # the paper-layout tables
    assert f"orch ui --workdir {work}" in r.output

    with mock.patch.object(report, "write_tables", wraps=report.write_tables) as tables:
        r2 = CliRunner().invoke(main, args)
    assert r2.exit_code == 0, r2.output
    assert tables.call_count == 1
    again = pd.read_csv(work / "sweeps" / "demo" / "results.csv")
    assert (work / "sweeps" / "demo" / "paper_tables.md").read_text() == markdown  # the same figures, restored
    # The restored sweep reports the same trials with the same (not retrained) results.
    cols = ["trial_id", "status", "epochs_completed"]
    pd.testing.assert_frame_equal(results[cols].sort_values("trial_id").reset_index(drop=True),
                                  again[cols].sort_values("trial_id").reset_index(drop=True))
    assert "test_dice_volume_mean" in again.columns
    pd.testing.assert_series_equal(results.sort_values("trial_id")["test_dice_volume_mean"].reset_index(drop=True),
                                   again.sort_values("trial_id")["test_dice_volume_mean"].reset_index(drop=True))
