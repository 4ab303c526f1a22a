"""``orch train`` records the run in MLflow (the sweep layout: experiment ``orch-train``, a parent run per run
directory, one child run with per-epoch and test metrics), into ``./mlflow.db`` by default; ``--no-tracking``
records nothing. A real fit and a real SQLite store."""

from __future__ import annotations

from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from orchestrator.cli import main

TINY_TRAIN = ["--encoder", "resnet18", "--epochs", "2", "--max-steps", "1", "--image-size", "32", "--batch-size", "4",
              "--max-eval-slices", "8", "--device", "cpu"]


def test_orch_train_records_a_single_run_in_the_default_store(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = CliRunner().invoke(main, ["train", "--data", str(prepared), *TINY_TRAIN, "--out", "run"])
    assert res.exit_code == 0, res.output
    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = c.get_experiment_by_name("orch-train")
    runs = c.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("orch.role") == "sweep"]
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.data.tags["orch.command"] == "train" and parent.info.status == "FINISHED"
    assert child.data.tags["orch.trial_id"] == "run" and child.data.params["encoder"] == "resnet18"
    assert [m.step for m in c.get_metric_history(child.info.run_id, "dice_volume_mean")] == [1, 2]
    assert 0 <= child.data.metrics["test_dice_volume_mean"] <= 1 and child.info.status == "FINISHED"

    (tmp_path / "untracked").mkdir()
    monkeypatch.chdir(tmp_path / "untracked")
    res = CliRunner().invoke(main, ["train", "--data", str(prepared), *TINY_TRAIN, "--out", "run", "--no-tracking"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "untracked" / "mlflow.db").exists()
