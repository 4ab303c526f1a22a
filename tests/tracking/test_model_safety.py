"""MLflow models of orch load without unpickling anything: a tampered checkpoint behind a model URI, or a pickled
``mlflow.pytorch`` model, is refused with a message and its payload never runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models import create_model
from orchestrator.config import TrainConfig
from orchestrator.tracking import TrackingError, load_logged_model, store
from orchestrator.tracking.models import log_model_from_checkpoint
from orchestrator.training.checkpoint import save_checkpoint


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def logged(tmp_path):
    """A real SQLite store with one self-contained orch model (copy mode) of an untrained resnet18 at 32 px."""
    cfg = TrainConfig(encoder="resnet18", image_size=32)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, model=create_model(cfg.model).state_dict(), model_config=cfg.model.to_dict(),
                    train_config=cfg.to_dict(), epoch=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = store.client(uri)
    exp = c.create_experiment("safety", artifact_location=str(tmp_path / "artifacts"))
    run = c.create_run(exp)
    model_id = log_model_from_checkpoint(uri, run.info.run_id, ckpt)
    c.set_terminated(run.info.run_id)
    return uri, run.info.run_id, model_id, tmp_path


def _stored(tmp_path: Path, name: str) -> list[Path]:
    return [p for p in (tmp_path / "artifacts").rglob(name) if p.is_file()]


def test_a_copied_model_holds_no_pickle_and_loads(logged):
    uri, run_id, model_id, tmp_path = logged
    stored = {p.name for p in (tmp_path / "artifacts").rglob("*") if p.is_file()}
    assert "best.pt" in stored and "pyfunc_entry.py" in stored
    assert not {n for n in stored if n.endswith((".pkl", ".pth"))}  # no python_model.pkl, no pickled network
    for model_uri in (f"models:/{model_id}", f"runs:/{run_id}/model"):
        network, size = load_logged_model(model_uri, uri)
        assert size == 32
        with torch.no_grad():
            assert tuple(network(torch.zeros(1, 3, 32, 32)).shape) == (1, 1, 32, 32)


def test_a_tampered_checkpoint_behind_a_model_uri_never_runs(logged):
    uri, run_id, model_id, tmp_path = logged
    marker = tmp_path / "pwned"
    (stored,) = _stored(tmp_path, "best.pt")
    torch.save({"model_config": {"encoder": "resnet18"}, "model": {}, "x": _Payload(marker)}, stored)
    with pytest.raises(TrackingError, match=rf"runs:/{run_id}/model .*never runs code"):
        load_logged_model(f"runs:/{run_id}/model", uri)
    assert not marker.exists()


def test_a_pickled_mlflow_pytorch_model_is_refused_unopened(tmp_path):
    import mlflow.pytorch

    marker = tmp_path / "pwned"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("legacy", artifact_location=str(tmp_path / "artifacts"))
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.pytorch.log_model(torch.nn.Conv2d(3, 1, 1), name="model", serialization_format="pickle",
                                     input_example=np.zeros((1, 3, 4, 4), np.float32))
    finally:
        mlflow.set_tracking_uri(None)
    (pth,) = _stored(tmp_path, "model.pth")
    torch.save(_Payload(marker), pth)  # what a hostile store serves
    with pytest.raises(TrackingError, match="not an orch checkpoint model.*pytorch.*loads no pickled model"):
        load_logged_model(f"runs:/{run.info.run_id}/model", uri)
    assert not marker.exists()
