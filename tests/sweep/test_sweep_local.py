"""A real sweep of the smoke grid on a local Ray (CPU), tracked in a real MLflow SQLite store; its report is
written once and uploaded as written; rerunning it restores the finished sweep without training again."""

from __future__ import annotations

import math
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from orchestrator import report
from orchestrator.config import SweepConfig
from orchestrator.grids import load_grid
from orchestrator.results_schema import results_columns
from orchestrator.sweep import run_sweep
from tests.sweep.conftest import TINY

pytestmark = pytest.mark.slow


def test_smoke_sweep_end_to_end(prepared, tmp_path):
    cfg = SweepConfig(grid="smoke", data=str(prepared), storage=str(tmp_path / "sweeps"),
                      overrides={**TINY, "epochs": 1})
    with mock.patch.object(report, "write_tables", wraps=report.write_tables) as tables, \
            mock.patch.object(report, "write_plots", wraps=report.write_plots) as plots:
        out = run_sweep(cfg, workdir=tmp_path)  # tracking on (the default): sqlite:///<tmp_path>/mlflow.db
    assert tables.call_count == 1 and plots.call_count == 1  # the report, once: MLflow's finish only uploads it

    df = pd.read_csv(out.results_csv)
    ids = [e.trial_id for e in load_grid("smoke")]
    assert sorted(df["trial_id"]) == sorted(ids) and list(df.columns) == list(results_columns())
    assert set(df["status"]) == {"finished"} and set(df["epochs_completed"]) == {1}
    for col in ("test_dice_volume_mean", "test_miou_2class", "val_dice_volume_mean", "img_per_s"):
        assert all(0 <= v < math.inf for v in df[col]), col
    for run_dir in df["run_dir"]:
        kept = {p.name for p in Path(run_dir).iterdir()}
        assert {"result.json", "best.pt", "per_patient_dice.csv", "history.csv"} <= kept
        assert "last.pt" not in kept  # a finished trial keeps no optimizer state (the largest file)
        assert len(list(Path(run_dir).parent.glob("checkpoint_*"))) == 1  # only the final checkpoint is kept
    assert out.counts == {"finished": 4} and "4 finished" in out.summary() and not out.restored

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 5 and len(children) == 4
    assert all("dice_volume_mean" in r.data.metrics for r in children)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    uploaded = {a.path.removeprefix("report/") for a in client.list_artifacts(parent.info.run_id, "report")}
    written = {p.name for p in out.report.values()}
    assert {"paper_tables.md", "plot_dice_vs_speed.png"} <= written and written | {"results.csv"} == uploaded

    # The same command again: everything is restored, nothing is trained twice.
    mtimes = {p: p.stat().st_mtime for p in (tmp_path / "sweeps" / "smoke").glob("*/checkpoint_*/result.json")}
    again = run_sweep(cfg, workdir=tmp_path)
    assert again.restored and again.counts == {"finished": 4}
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes
    assert len(client.search_runs([exp.experiment_id])) == 5
