"""The end of a sweep: tables and plots on the parent run, the top-k trials as loadable MLflow models, and
``orch report`` from MLflow agreeing with the runs' metrics. ``finish`` uploads the files the sweep wrote and
writes none itself."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.report import write_report, write_tables
from orchestrator.tracking import SweepTracker, default_tracking_uri


def _row(trial_id: str, optimizer: str, lr: float, result, run_dir, scale: float) -> dict:
    """A results.csv row (the sweep's columns) for a trial whose test metrics are ``result.test`` x ``scale``."""
    row = {"trial_id": trial_id, "encoder": "resnet18", "optimizer": optimizer, "lr": lr, "status": "finished",
           "epochs_completed": result.epochs_completed, "best_epoch": result.best_epoch, "it_per_s": 3.0 * scale,
           "run_dir": str(run_dir)}
    row.update({("test_loss" if k in ("val_loss", "test_loss") else f"test_{k}"): v * scale
                for k, v in result.test.items()})
    return row


@pytest.mark.slow
def test_finish_logs_report_and_top_model_and_report_reads_mlflow(mlflow_server, trained_run, tmp_path,
                                                                  monkeypatch):
    import mlflow.pyfunc

    res = trained_run.result
    st = SweepTracker.open(mlflow_server.url, experiment="finish", params={"grid": "smoke"})
    rows = []
    for i, (opt, lr, scale) in enumerate((("adam", 1e-3, 1.0), ("sgd", 1e-2, 0.5))):
        tt = st.trial(f"t{i}", buffer_dir=tmp_path / "buf")
        tt.start({"encoder": "resnet18", "optimizer": opt, "lr": lr})
        for rep in trained_run.reports:
            tt.log_epoch(rep.epoch, rep.metrics)
        # The second trial's test metrics are scaled so the two trials differ in the tables.
        scaled = res.to_dict() | {"test": {k: v * scale for k, v in res.test.items()}}
        assert tt.finish(scaled)
        rows.append(_row(f"t{i}", opt, lr, res, res.run_dir, scale))
    # A third trial died mid-training (its process never reached finish) and ended in error.
    broken = st.trial("t2", buffer_dir=tmp_path / "buf")
    broken.start({"encoder": "resnet18", "optimizer": "rmsprop", "lr": 1e-4})
    broken.log_epoch(1, trained_run.reports[0].metrics)
    rows.append({"trial_id": "t2", "encoder": "resnet18", "optimizer": "rmsprop", "lr": 1e-4, "status": "error",
                 "error": "RuntimeError: worker died"})
    sweep_dir = tmp_path / "storage" / "finish"  # not ./sweeps: the report below must read MLflow
    sweep_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(sweep_dir / "results.csv", index=False)
    write_report(pd.DataFrame(rows), sweep_dir)  # what the sweep writes before its finish

    # "copy": the store's readers may not reach the sweep storage, so checkpoints and models are self-contained.
    assert st.finish(sweep_dir, top_k=1, log_checkpoints="copy")
    c = MlflowClient(mlflow_server.url)
    parent = c.get_run(st.parent_run_id)
    assert parent.info.status == "FINISHED"
    logged = {a.path for a in c.list_artifacts(st.parent_run_id, "report")}
    assert {"report/results.csv", "report/paper_tables.md", "report/paper_tables.csv",
            "report/plot_dice_vs_speed.png", "report/plot_paper_vs_ours.png",
            "report/plot_heatmap_resnet18.png"} <= logged
    # Only the best trial (t0, unscaled) carries a model, and it loads and segments.
    children = {r.data.tags["orch.trial_id"]: r for r in
                c.search_runs([st.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{st.parent_run_id}'")}
    assert "orch.model_id" in children["t0"].data.tags and "orch.model_id" not in children["t1"].data.tags
    assert children["t2"].info.status == "FAILED" and children["t2"].data.tags["orch.status"] == "failed"
    assert children["t2"].data.tags["orch.error"] == "RuntimeError: worker died"
    assert children["t1"].info.status == "FINISHED"
    for tid in ("t0", "t1"):  # both kept a checkpoint (results.csv's run_dir holds best.pt): copied once each
        assert children[tid].data.tags["orch.checkpoint"] == str(res.run_dir / "best.pt")
        assert [a.path for a in c.list_artifacts(children[tid].info.run_id, "checkpoints")] == ["checkpoints/best.pt"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)  # where models:/ URIs resolve
    model = mlflow.pyfunc.load_model(f"models:/{children['t0'].data.tags['orch.model_id']}")
    out = model.predict(np.zeros((2, 3, 32, 32), dtype=np.float32))
    assert tuple(out.shape) == (2, 1, 32, 32)
    info = mlflow.models.get_model_info(f"models:/{children['t0'].data.tags['orch.model_id']}")
    assert info.signature is not None
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 3, 32, 32]
    assert st.finish(sweep_dir, top_k=1, log_checkpoints="copy")  # finishing again logs no second model
    again = c.get_run(children["t0"].info.run_id).data.tags["orch.model_id"]
    assert again == children["t0"].data.tags["orch.model_id"]

    # `orch report NAME` with no sweep directory here reads MLflow; its tables hold the runs' metrics.
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["report", "finish", "--tracking-uri", mlflow_server.url, "--no-plots",
                                    "--storage", str(tmp_path / "elsewhere")])
    assert out.exit_code == 0, out.output
    assert f"results: mlflow:{mlflow_server.url}#finish" in out.output
    table = pd.read_csv(tmp_path / "reports" / "finish" / "paper_tables.csv")
    for tid, opt, lr in (("t0", "adam", 1e-3), ("t1", "sgd", 1e-2)):
        m = children[tid].data.metrics
        got = table[(table["optimizer"] == opt) & (table["encoder"] == "resnet18") & np.isclose(table["lr"], lr)]
        assert len(got) == 1
        got = got.iloc[0]
        assert got["Dice/volume (ours)"] == pytest.approx(m["test_dice_volume_mean"])
        assert got["Mean IoU (ours)"] == pytest.approx(m["test_miou_2class"])
        assert got["Dice (ours)"] == pytest.approx(m["test_dice_slice_all_empty1"])
        assert got["Loss (ours)"] == pytest.approx(m["test_loss"])
        assert got["it/s (ours)"] == pytest.approx(m["it_per_s_mean"])
        assert f"{m['test_miou_2class']:.3f}" in out.output


def _files(d: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(d)): (p.stat().st_mtime_ns, p.read_bytes()) for p in d.rglob("*") if p.is_file()}


def test_finish_uploads_only_the_files_that_exist_and_writes_none(tmp_path):
    results = pd.DataFrame([{"trial_id": "t0", "encoder": "resnet18", "optimizer": "adam", "lr": 1e-3,
                             "status": "finished", "test_dice_volume_mean": 0.5}])
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    results.to_csv(sweep_dir / "results.csv", index=False)
    write_tables(results, sweep_dir)  # tables, and no plots: finish must not draw them
    before = _files(sweep_dir)
    st = SweepTracker.open(default_tracking_uri(tmp_path), experiment="upload-only")
    # The caller's frame is used as it is: results.csv is not read again.
    with mock.patch.object(pd, "read_csv", side_effect=AssertionError("results.csv read again")):
        assert st.finish(sweep_dir, top_k=0, results=results)
    assert _files(sweep_dir) == before
    c = MlflowClient(default_tracking_uri(tmp_path))
    logged = {a.path for a in c.list_artifacts(st.parent_run_id, "report")}
    assert logged == {"report/results.csv", "report/paper_tables.csv", "report/paper_tables.md"}
    assert c.get_run(st.parent_run_id).info.status == "FINISHED"
