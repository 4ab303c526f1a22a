"""The Ray Train path (a TorchTrainer per trial, as --gpus-per-trial > 1 uses for DDP), here with one CPU worker:
metrics and checkpoints reach Tune through TuneReportCallback, and trainers release their workers so the next
trial's trainer can start on a 2-CPU machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import SweepConfig
from orchestrator.sweep import run_sweep
from tests.sweep.conftest import TINY, write_grid

pytestmark = pytest.mark.slow


def test_trials_in_ray_train_workers(prepared, tmp_path):
    grid = write_grid(tmp_path / "g.csv", [
        {"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "epochs": 2, **TINY},
        {"encoder": "resnet18", "optimizer": "sgd", "lr": 1e-3, "epochs": 1, **TINY},
    ])
    cfg = SweepConfig(grid=str(grid), name="train", data=str(prepared), storage=str(tmp_path / "s"),
                      launcher="train")
    out = run_sweep(cfg, tracking=None)
    df = out.results.set_index("trial_id")
    assert out.counts == {"finished": 2}
    assert df.loc["resnet18-adam-lr1e-03", "epochs_completed"] == 2 and set(df["workers"]) == {1}
    for run_dir in df["run_dir"]:
        assert Path(run_dir).parent.parent == tmp_path / "s" / "train" / "ray-train"
        assert (Path(run_dir) / "result.json").exists() and (Path(run_dir) / "best.pt").exists()
