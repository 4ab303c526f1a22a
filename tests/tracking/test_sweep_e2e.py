"""Issue 5 end to end: a real sweep (local Ray, CPU) recording into a real ``mlflow server``. The driver is
SIGKILLed mid-sweep and rerun; during the rerun the server is stopped and restarted. Afterwards the REST API
shows one parent run and one child run per configuration, each with its params, every epoch's metrics exactly
once, its test metrics and artefacts; the top trial is a logged model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.tracking.ui import free_port, start_server
from tests.conftest import TINY, write_grid

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("scratch_runs")]
EPOCHS = 3


def _checkpoints(exp: Path) -> set[str]:
    return {str(p) for p in exp.glob("*/checkpoint_*")}


def _wait(cond, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return cond()
        time.sleep(0.2)
    return False


def _opened_at(c: MlflowClient, run_id: str) -> str | None:
    """When a driver last attached to the parent run."""
    return c.get_run(run_id).data.tags.get("orch.opened_at")


def _runs(c: MlflowClient, name: str):
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("orch.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return runs, parents, children


def test_sweep_into_server_survives_sigkill_and_outage(prepared, tmp_path):
    grid = write_grid(tmp_path / "e2e.csv", [
        {"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "epochs": EPOCHS, **TINY},
        {"encoder": "resnet18", "optimizer": "rmsprop", "lr": 1e-4, "epochs": EPOCHS, **TINY},
    ])
    db, art, port = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", free_port()
    server = start_server(db, art, port=port, log_path=tmp_path / "server.log")
    exp = tmp_path / "sweeps" / "e2e"
    cmd = [sys.executable, "-m", "orchestrator.cli", "sweep", "--grid", str(grid), "--data", str(prepared),
           "--storage", str(tmp_path / "sweeps"), "--tracking-uri", server.url]
    env = {**os.environ, "ORCH_RUNS_DIR": str(tmp_path / "runs")}
    procs: list[subprocess.Popen] = []
    try:
        # 1. The driver dies (SIGKILL) once a trial has checkpointed.
        driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        procs.append(driver)
        assert _wait(lambda: _checkpoints(exp), 180, driver) and driver.poll() is None
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
        c = MlflowClient(server.url)
        runs, parents, children = _runs(c, "e2e")
        assert len(parents) == 1 and len(children) <= 2

        # 2. The rerun resumes; the server goes away while trials train, then comes back.
        log = open(tmp_path / "rerun.log", "w")
        rerun = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        procs.append(rerun)
        opened = parents[0].data.tags["orch.opened_at"]
        # Stop the server once the rerun has reattached to the parent run (trials of the killed driver may still
        # be finishing an epoch: Ray workers outlive a SIGKILLed driver for a moment).
        assert _wait(lambda: _opened_at(c, parents[0].info.run_id) not in (opened, None), 180, rerun), (
            (tmp_path / "rerun.log").read_text()[-3000:])
        server.stop()
        # Training goes on: the next epoch's records land in the sweep's buffer instead of the server.
        assert _wait(lambda: list((exp / "mlflow-buffer").glob("*.jsonl")), 90, rerun)
        assert rerun.poll() is None
        server = start_server(db, art, port=port, log_path=tmp_path / "server.log")
        assert rerun.wait(300) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        assert "2 finished" in (tmp_path / "rerun.log").read_text()

        # 3. Whatever the outage left buffered is uploaded (nothing, if the trials flushed it themselves).
        out = CliRunner().invoke(main, ["report", str(exp), "--sync", "--no-plots"])
        assert out.exit_code == 0, out.output
        assert not list((exp / "mlflow-buffer").glob("*"))

        results = pd.read_csv(exp / "results.csv")
        runs, parents, children = _runs(c, "e2e")
        assert len(runs) == 3 and len(parents) == 1
        assert sorted(r.data.tags["orch.trial_id"] for r in children) == sorted(results["trial_id"])
        parent = parents[0]
        assert parent.info.status == "FINISHED" and parent.data.tags["grid"] == str(grid)
        assert {"report/results.csv", "report/paper_tables.md", "report/plot_dice_vs_speed.png"} <= {
            a.path for a in c.list_artifacts(parent.info.run_id, "report")}
        for run in children:
            rid, m = run.info.run_id, run.data.metrics
            row = results[results["trial_id"] == run.data.tags["orch.trial_id"]].iloc[0]
            assert run.info.status == "FINISHED" and run.data.tags["orch.status"] == "finished"
            assert {"encoder", "optimizer", "lr", "epochs", "batch_size", "loss", "image_size"} <= set(run.data.params)
            assert run.data.params["optimizer"] == row["optimizer"] and float(run.data.params["lr"]) == row["lr"]
            for key in ("loss", "val_loss", "dice_volume_mean", "dice_slice_all_empty1", "miou_2class",
                        "it_per_s"):
                steps = [h.step for h in c.get_metric_history(rid, key)]
                assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, steps)  # every epoch, exactly once
            assert m["test_dice_volume_mean"] == pytest.approx(row["test_dice_volume_mean"])
            assert m["test_miou_2class"] == pytest.approx(row["test_miou_2class"])
            arts = {a.path for a in c.list_artifacts(rid)}
            assert {"learning_curve.png", "overlay.png", "per_patient_dice.csv"} <= arts
            # One copy of the weights: the run refers to the sweep's best.pt and holds no copy of it.
            assert "checkpoints" not in arts and run.data.tags["orch.run_dir"] == row["run_dir"]
            assert run.data.tags["orch.checkpoint"] == str(Path(row["run_dir"]) / "best.pt")
            assert Path(run.data.tags["orch.checkpoint"]).is_file()
        assert sum("orch.model_id" in r.data.tags for r in children) >= 1
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        server.stop()
