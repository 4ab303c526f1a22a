"""``orch report SWEEP --tracking-uri URI`` for a sweep with no directory here: the per-patient table comes back
from the parent run's ``report/per_patient.csv`` (a real tiny sweep tracked in a real SQLite store), so the report
read from MLflow has its statistics section too."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.config import SweepConfig, TrackingConfig
from orchestrator.report import STATS_HEADING
from orchestrator.report.build import SweepResults, make_report
from tests.sweep.conftest import TINY, write_grid


@pytest.mark.slow
def test_a_report_read_back_from_mlflow_has_the_statistics(prepared_tested, tmp_path, monkeypatch):
    from orchestrator.sweep import run_sweep
    from orchestrator.tracking.readback import per_patient_frame
    from orchestrator.tracking.sweep import SweepTracker

    grid = write_grid(tmp_path / "twin.csv", [
        {"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "epochs": 1, **TINY},
        {"encoder": "resnet18", "optimizer": "sgd", "lr": 1e-2, "epochs": 1, **TINY}])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = SweepConfig(grid=str(grid), data=str(prepared_tested), storage=str(tmp_path / "sweeps"))
    out = run_sweep(cfg, tracking=TrackingConfig(tracking_uri=uri, log_models_top_k=0), workdir=tmp_path)
    assert out.counts == {"finished": 2}
    written = pd.read_csv(out.results_dir / "per_patient.csv")
    assert len(written) and written["config_id"].nunique() == 2

    read = per_patient_frame(uri, "twin")
    pd.testing.assert_frame_equal(read, written)
    shutil.rmtree(tmp_path / "sweeps")  # no sweep directory anywhere: only MLflow knows the sweep now
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = CliRunner().invoke(main, ["report", "twin", "--tracking-uri", uri, "--no-plots"])
    assert res.exit_code == 0, res.output
    assert f"results: mlflow:{uri}#twin" in res.output
    assert STATS_HEADING in res.output and "Statistics skipped" not in res.output
    assert (elsewhere / "reports" / "twin" / "stats_vs_best.csv").is_file() and "wrote stats_markdown:" in res.output

    SweepTracker.open(uri, experiment="bare", sweep_name="bare")  # a parent run that never finished: no report/
    assert per_patient_frame(uri, "bare") is None


def test_results_read_without_a_per_patient_table_say_so(tmp_path):
    frame = pd.DataFrame([{"trial_id": "resnet18-adam-lr1e-03", "encoder": "resnet18", "optimizer": "adam",
                           "lr": 1e-3, "status": "finished", "test_dice_volume_mean": 0.7}])
    rep = make_report("gone", workdir=tmp_path, plots=False,
                      load=lambda name: SweepResults(frame, f"mlflow:sqlite:///x.db#{name}"))
    assert rep.markdown.rstrip().splitlines()[-1] == (
        "Statistics skipped: the results read from mlflow:sqlite:///x.db#gone come without per_patient.csv (the "
        "sweep's parent run holds none: a sweep still running, or one from an older orch): the per-patient scores "
        "they need are not here.")
    assert "stats_markdown" not in rep.paths
