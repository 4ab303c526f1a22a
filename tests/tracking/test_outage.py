"""A real ``mlflow server`` stopped while trials log and restarted later: training never sees an error, the
records wait in the buffer and arrive exactly once (at the next log call, or by ``orch report --sync``)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.tracking import SweepTracker, TrialTracker, default_tracking_uri
from orchestrator.tracking.ui import free_port, start_server


@pytest.mark.slow
def test_outage_buffers_then_flushes_exactly_once(tmp_path, trained_run, caplog):
    caplog.set_level(logging.WARNING)
    db, art, port = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", free_port()
    server = start_server(db, art, port=port, log_path=tmp_path / "server.log")
    sweep_dir = tmp_path / "sweeps" / "outage"
    buffers = sweep_dir / "mlflow-buffer"
    try:
        st = SweepTracker.open(server.url, experiment="outage")
        r1, r2 = trained_run.reports
        # t1: flushed at its next call after the server returns.
        t1 = TrialTracker(server.url, st.experiment_id, st.parent_run_id, "t1", buffer_dir=buffers,
                          retry_interval_s=0.0)
        t1.start({"encoder": "resnet18"})
        t1.log_epoch(r1.epoch, r1.metrics)
        server.stop()

        t1.log_epoch(r2.epoch, r2.metrics)  # must not raise
        assert list(buffers.glob("t1.*.jsonl"))
        assert "unreachable" in caplog.text and "buffered" in caplog.text
        # t2: lives entirely inside the outage, finishes there; its records wait for `orch report --sync`.
        t2 = TrialTracker(server.url, st.experiment_id, st.parent_run_id, "t2", buffer_dir=buffers)
        t2.start({"encoder": "resnet18", "lr": 0.01})
        for rep in trained_run.reports:
            t2.log_epoch(rep.epoch, rep.metrics)
        assert t2.finish(trained_run.result) is False
        assert "orch report SWEEP --sync" in caplog.text

        server = start_server(db, art, port=port, log_path=tmp_path / "server.log")
        assert t1.finish(trained_run.result) is True  # flushes epoch 2 first, then finishes
        assert not list(buffers.glob("t1.*.jsonl")) and list(buffers.glob("t2.*.jsonl"))

        res = trained_run.result
        row = {"trial_id": "t2", "encoder": "resnet18", "optimizer": "adam", "lr": 0.01, "status": res.status,
               **{f"test_{k}": v for k, v in res.test.items() if not k.startswith("test_")}}
        sweep_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([row]).to_csv(sweep_dir / "results.csv", index=False)
        out = CliRunner().invoke(main, ["report", str(sweep_dir), "--sync", "--no-plots"])
        assert out.exit_code == 0, out.output
        assert "synced buffered MLflow records of 1 trial(s)" in out.output
        assert not list(buffers.glob("*.jsonl"))

        c = MlflowClient(server.url)
        runs = c.search_runs([st.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{st.parent_run_id}'")
        assert sorted(r.data.tags["orch.trial_id"] for r in runs) == ["t1", "t2"]
        for run in runs:
            assert run.info.status == "FINISHED"
            hist = c.get_metric_history(run.info.run_id, "dice_volume_mean")
            assert sorted(m.step for m in hist) == [1, 2]  # each epoch exactly once
            assert run.data.metrics["test_dice_volume_mean"] == pytest.approx(res.test["dice_volume_mean"])
            assert "per_patient_dice.csv" in {a.path for a in c.list_artifacts(run.info.run_id)}
        assert [r for r in runs if r.data.tags["orch.trial_id"] == "t2"][0].data.params["lr"] == "0.01"
    finally:
        server.stop()


def test_orch_report_sync_uploads_a_trial_and_a_pending_finish_into_the_moved_store(tmp_path):
    """A trial and the sweep's finish that never reached their store (nothing answers there) are uploaded by
    ``orch report SWEEP --sync --tracking-uri`` into the store the sweep's records moved to (SQLite: no server)."""
    uri = default_tracking_uri(tmp_path)
    st = SweepTracker.open(uri, experiment="moved")
    gone = f"http://127.0.0.1:{free_port()}"
    sweep_dir = tmp_path / "sweeps" / "moved"
    buffers = sweep_dir / "mlflow-buffer"
    tt = TrialTracker(gone, st.experiment_id, st.parent_run_id, "t0", buffer_dir=buffers)
    tt.start({"encoder": "resnet18", "lr": 0.001})
    tt.log_epoch(1, {"dice_volume_mean": 0.25, "it_per_s": 2.0})
    assert tt.finish({"status": "finished", "test": {"dice_volume_mean": 0.5}, "run_dir": str(tmp_path),
                      "history": [{"epoch": 1, "it_per_s": 2.0}]}) is False
    row = {"trial_id": "t0", "encoder": "resnet18", "optimizer": "adam", "lr": 0.001, "status": "finished",
           "test_dice_volume_mean": 0.5}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(sweep_dir / "results.csv", index=False)
    unreachable = SweepTracker(uri=gone, experiment_id=st.experiment_id, parent_run_id=st.parent_run_id,
                               sweep_name="moved")
    assert unreachable.finish(sweep_dir, top_k=0) is False
    assert (buffers / "sweep-pending.json").is_file() and list(buffers.glob("t0.*.jsonl"))

    out = CliRunner().invoke(main, ["report", str(sweep_dir), "--sync", "--tracking-uri", uri, "--no-plots"])
    assert out.exit_code == 0, out.output
    assert "synced buffered MLflow records of 1 trial(s)" in out.output and "still buffered" not in out.output
    assert not list(buffers.iterdir())
    c = MlflowClient(uri)
    assert c.get_run(st.parent_run_id).info.status == "FINISHED"
    assert {a.path for a in c.list_artifacts(st.parent_run_id, "report")} >= {"report/results.csv"}
    (child,) = c.search_runs([st.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{st.parent_run_id}'")
    assert child.info.status == "FINISHED" and child.data.metrics["test_dice_volume_mean"] == 0.5
    assert child.data.metrics["it_per_s_mean"] == 2.0 and child.data.params["lr"] == "0.001"
