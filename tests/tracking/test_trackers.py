"""SweepTracker / TrialTracker against a real ``mlflow server``: reattach on resume, exactly-once metrics,
artefacts visible through the REST client, the default SQLite store."""

from __future__ import annotations

import os

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.tracking import SweepTracker, TrialTracker, default_tracking_uri, store


def _children(c: MlflowClient, st: SweepTracker):
    return c.search_runs([st.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{st.parent_run_id}'")


@pytest.mark.slow
def test_sweep_open_twice_reattaches_one_parent(mlflow_server, caplog):
    st1 = SweepTracker.open(mlflow_server.url, experiment="reattach", tags={"grid": "smoke"},
                            params={"encoder": "resnet18,resnet34", "lr": "0.001"})
    st2 = SweepTracker.open(mlflow_server.url, experiment="reattach", tags={"grid": "smoke"},
                            params={"encoder": "resnet18,resnet34", "lr": "0.01"})  # changed: kept, warned
    assert (st2.experiment_id, st2.parent_run_id) == (st1.experiment_id, st1.parent_run_id)
    c = MlflowClient(mlflow_server.url)
    parents = c.search_runs([st1.experiment_id], filter_string="tags.`orch.role` = 'sweep'")
    assert len(parents) == 1
    run = parents[0]
    assert run.data.params == {"encoder": "resnet18,resnet34", "lr": "0.001"}
    assert run.data.tags["grid"] == "smoke" and run.data.tags["orch.sweep"] == "reattach"
    assert run.data.tags["orch.git_commit"] and run.data.tags["orch.version"]
    assert "differs" in caplog.text


@pytest.mark.slow
def test_trial_resume_one_child_exactly_once_metrics_and_artifacts(mlflow_server, trained_run, tmp_path):
    st = SweepTracker.open(mlflow_server.url, experiment="resume-trial", data=trained_run.prepared)
    params = {"encoder": "resnet18", "lr": 1e-3, "epochs": 2, "max_steps": None}
    first, second = trained_run.reports
    tt = TrialTracker(mlflow_server.url, st.experiment_id, st.parent_run_id, "t-resnet18", buffer_dir=tmp_path)
    tt.start(params)
    tt.log_epoch(first.epoch, first.metrics)
    # The trial process dies; Ray restarts it: a new tracker, the same params, epoch 1 logged again.
    tt2 = TrialTracker(mlflow_server.url, st.experiment_id, st.parent_run_id, "t-resnet18", buffer_dir=tmp_path)
    tt2.start(params)
    assert tt2.run_id == tt.run_id
    tt2.log_epoch(first.epoch, first.metrics)
    tt2.log_epoch(second.epoch, second.metrics)
    assert tt2.finish(trained_run.result) is True

    c = MlflowClient(mlflow_server.url)
    children = _children(c, st)
    assert len(children) == 1
    run = children[0]
    assert run.info.status == "FINISHED" and run.data.tags["orch.status"] == trained_run.result.status
    assert run.data.tags["orch.trial_id"] == "t-resnet18"
    assert run.data.params == {"encoder": "resnet18", "lr": "0.001", "epochs": "2", "max_steps": "None"}
    for key in ("dice_volume_mean", "miou_2class", "val_loss", "loss", "it_per_s"):
        hist = c.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in hist) == [1, 2], key
        assert {m.step: m.value for m in hist}[2] == pytest.approx(second.metrics[key])
    m = run.data.metrics
    assert m["test_dice_volume_mean"] == pytest.approx(trained_run.result.test["dice_volume_mean"])
    assert m["test_miou_2class"] == pytest.approx(trained_run.result.test["miou_2class"])
    assert "test_loss" in m and "test_test_loss" not in m
    assert m["epochs_completed"] == 2
    top = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"learning_curve.png", "overlay.png", "per_patient_dice.csv", "result.json"} <= top
    # The trial never uploads its checkpoint: the sweep's finish records it (by reference, or a copy on request).
    assert "checkpoints" not in top and "orch.checkpoint" not in run.data.tags
    parent = c.get_run(st.parent_run_id)
    assert len(parent.data.tags["orch.data_manifest_sha256"]) == 64
    # A finished trial restored and "finished" again changes nothing.
    tt3 = TrialTracker(mlflow_server.url, st.experiment_id, st.parent_run_id, "t-resnet18", buffer_dir=tmp_path)
    tt3.start(params)
    tt3.finish(trained_run.result)
    assert len(_children(c, st)) == 1
    assert len(c.get_metric_history(run.info.run_id, "test_dice_volume_mean")) == 1


def test_default_store_is_sqlite_with_artifacts_beside_it(tmp_path, monkeypatch, trained_run):
    monkeypatch.chdir(tmp_path)  # nothing may land in ./mlruns of the current directory
    work = tmp_path / "work"
    work.mkdir()
    uri = default_tracking_uri(work)
    assert uri == f"sqlite:///{(work / 'mlflow.db').resolve()}"
    st = SweepTracker.open(uri, experiment="local")
    tt = st.trial("t0", buffer_dir=tmp_path / "buf")
    tt.start({"encoder": "resnet18"})
    for rep in trained_run.reports:
        tt.log_epoch(rep.epoch, rep.metrics)
    assert tt.finish(trained_run.result)
    assert (work / "mlflow.db").is_file()
    assert list((work / "mlartifacts").rglob("learning_curve.png"))
    assert not (tmp_path / "mlruns").exists()


def test_file_store_refused():
    with pytest.raises(store.TrackingError, match="mlruns"):
        SweepTracker.open("./mlruns", experiment="x")


def test_unreachable_server_at_sweep_start_is_a_clear_error(monkeypatch):
    from orchestrator.tracking.sweep import WAIT_ENV

    monkeypatch.setenv(WAIT_ENV, "0")
    port = __import__("orchestrator.tracking.ui", fromlist=["free_port"]).free_port()
    with pytest.raises(store.TrackingError, match="does not answer.*ORCH_TRACKING_WAIT seconds"):
        SweepTracker.open(f"http://127.0.0.1:{port}", experiment="x")
    for bad in ("soon", "-5", "nan"):
        monkeypatch.setenv(WAIT_ENV, bad)
        with pytest.raises(store.TrackingError, match=f"ORCH_TRACKING_WAIT='{bad}' is not a number of seconds"):
            SweepTracker.open(f"http://127.0.0.1:{port}", experiment="x")


def test_a_sweep_waits_for_a_server_that_is_still_starting(tmp_path, monkeypatch, caplog):
    """A job submitted right after `ray up` may reach the head's MLflow before it answers: the sweep waits."""
    import threading

    from orchestrator.tracking.sweep import WAIT_ENV
    from orchestrator.tracking.ui import free_port, start_server

    monkeypatch.setenv(WAIT_ENV, "120")
    port = free_port()
    servers = []
    later = threading.Timer(3.0, lambda: servers.append(
        start_server(f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "art", port=port)))
    later.start()
    try:
        with caplog.at_level("WARNING", logger="orchestrator.tracking.sweep"):
            st = SweepTracker.open(f"http://127.0.0.1:{port}", experiment="late")
        assert st.parent_run_id and "waiting for the MLflow server at http://127.0.0.1" in caplog.text
    finally:
        later.join()
        for s in servers:
            s.stop()


def test_http_retries_are_short():
    assert int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2
    assert int(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 30
