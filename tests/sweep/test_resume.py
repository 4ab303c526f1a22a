"""Killing the driver with SIGKILL mid-sweep and rerunning the same command completes the sweep with exactly
one result (and one MLflow run) per configuration; a diverging configuration is a result, not an error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.sweep.conftest import TINY, write_grid

pytestmark = pytest.mark.slow


def _orch(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "sweep", *args]


def test_sigkill_driver_then_rerun_gives_one_result_per_configuration(prepared, tmp_path):
    grid = write_grid(tmp_path / "kill.csv", [
        {"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "epochs": 3, **TINY},
        {"encoder": "resnet18", "optimizer": "rmsprop", "lr": 1e-4, "epochs": 3, **TINY},
        # SGD at an absurd learning rate: the loss explodes in the first epoch.
        {"encoder": "resnet18", "optimizer": "sgd", "lr": 1e8, "epochs": 3, **{**TINY, "max_steps": 2}},
    ])
    args = ["--grid", str(grid), "--data", str(prepared), "--storage", str(tmp_path / "sweeps")]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # tracking: sqlite in tmp_path
    env["ORCH_RUNS_DIR"] = str(tmp_path / "runs")
    exp = tmp_path / "sweeps" / "kill"
    driver = subprocess.Popen(_orch(args), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 150
        # Kill once some trial has checkpointed (mid-sweep: nothing has finished all 3 epochs yet).
        while not list(exp.glob("*/checkpoint_*")) and driver.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert driver.poll() is None, "the sweep ended before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert not (exp / "results.csv").exists()

    rerun = subprocess.run(_orch(args), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=240)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert "sweep kill (resumed): 3 configurations (2 finished, 1 diverged)" in rerun.stdout

    df = pd.read_csv(exp / "results.csv")
    assert sorted(df["trial_id"]) == ["resnet18-adam-lr1e-03", "resnet18-rmsprop-lr1e-04", "resnet18-sgd-lr1e+08"]
    status = dict(zip(df["trial_id"], df["status"]))
    assert status["resnet18-sgd-lr1e+08"] == "diverged"
    assert set(df.loc[df["status"] == "finished", "epochs_completed"]) == {3}

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("kill").experiment_id])
    children = [r.data.tags.get("orch.trial_id") for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(children) == sorted(df["trial_id"])  # the resumed trials continued their own runs
    assert len(runs) == 4
