"""Kill-and-resume: a training process SIGKILLed right after its first checkpoint; fit on the same run_dir then
finishes the remaining epochs only, and the result equals an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from orchestrator.training import fit
from tests.training.training_helpers import tiny_cfg

_KILLED_AFTER_FIRST_EPOCH = """
import json, os, signal, sys
from orchestrator.config import TrainConfig
from orchestrator.training import fit

def hook(report):
    if report.epoch == 1:  # last.pt is on disk by now (written before on_epoch)
        os.kill(os.getpid(), signal.SIGKILL)

fit(TrainConfig.from_dict(json.loads(sys.argv[3])), sys.argv[1], sys.argv[2], on_epoch=hook)
"""


@pytest.mark.slow
def test_killed_run_resumes_remaining_epochs(synthetic_prepared, tmp_path):
    cfg = tiny_cfg(epochs=3)
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _KILLED_AFTER_FIRST_EPOCH, str(synthetic_prepared), str(run_dir),
                           json.dumps(cfg.to_dict())], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (run_dir / "last.pt").exists() and not (run_dir / "result.json").exists()

    seen = []
    resumed = fit(cfg, synthetic_prepared, run_dir, on_epoch=lambda r: seen.append(r.epoch))
    assert seen == [2, 3]
    assert resumed.status == "finished" and resumed.epochs_completed == 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]

    straight = fit(cfg, synthetic_prepared, tmp_path / "straight")
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    assert resumed.test["test_loss"] == pytest.approx(straight.test["test_loss"], rel=1e-4)
