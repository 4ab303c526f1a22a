"""Fixtures for the tracking and report tests: a real ``mlflow server`` subprocess (SQLite backend, artefacts in
tmp) and one tiny real training run whose reports and result feed the trackers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.tracking.ui import start_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (free port) shared by the session; stopped at the end."""
    d = tmp_path_factory.mktemp("mlflow-server")
    server = start_server(f"sqlite:///{d / 'mlflow.db'}", d / "artifacts", log_path=d / "server.log")
    yield server
    server.stop()


@dataclass
class TrainedRun:
    """A real ``fit`` of a tiny configuration: the per-epoch reports it sent and its ``TrainResult``."""

    reports: list
    result: object
    prepared: Path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, prepared) -> TrainedRun:
    """A 2-epoch resnet18 fit at 32x32 on the tiny synthetic prepared data of tests/conftest.py (seconds on a
    CPU)."""
    from orchestrator.config import TrainConfig
    from orchestrator.training import fit

    d = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(encoder="resnet18", epochs=2, batch_size=4, max_steps=1, image_size=32, max_eval_slices=8,
                      device="cpu")
    reports: list = []
    result = fit(cfg, prepared, d / "run", on_epoch=reports.append)
    return TrainedRun(reports=reports, result=result, prepared=Path(prepared))
