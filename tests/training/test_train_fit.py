"""fit end to end on synthetic data: reports, artefacts, the finished-run shortcut, checkpoints that rebuild the
model, predict_masks, divergence."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from data_prep import PreparedData
from orchestrator.metrics import EVAL_METRICS
from orchestrator.results_schema import BASELINE_METRICS, baseline_key
from orchestrator.training import TrainResult, fit, load_checkpoint, predict_masks
from tests.training.training_helpers import tiny_cfg

REPORT_KEYS = {"loss", "it_per_s", "img_per_s", "learning_rate", "epoch_time_s", "val_loss", *EVAL_METRICS}
ARTEFACTS = {"result.json", "history.csv", "per_patient_dice.csv", "learning_curve.png", "overlay.png", "best.pt",
             "last.pt"}


@pytest.fixture(scope="module")
def finished_run(synthetic_prepared, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fit") / "run"
    reports = []
    cfg = tiny_cfg(epochs=2)
    result = fit(cfg, synthetic_prepared, run_dir, on_epoch=reports.append)
    return cfg, run_dir, reports, result


def test_reports_and_result(finished_run):
    cfg, run_dir, reports, result = finished_run
    assert [r.epoch for r in reports] == [1, 2]
    assert all(set(r.metrics) == REPORT_KEYS and r.status == "running" and r.rank == 0 for r in reports)
    assert reports[0].is_best
    assert all(np.isfinite(v) for r in reports for v in r.metrics.values())
    assert result.status == "finished" and result.epochs_completed == 2
    assert result.best_epoch in (1, 2)
    assert set(result.test) == {*EVAL_METRICS, "test_loss", *(baseline_key(m) for m in BASELINE_METRICS)}
    assert {r["split"] for r in result.per_patient} == {"val", "test"}
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert TrainResult.from_dict(result.to_dict()).to_dict() == result.to_dict()


def test_artefacts_written(finished_run):
    _, run_dir, _, result = finished_run
    assert ARTEFACTS <= {p.name for p in run_dir.iterdir()}
    assert not list(run_dir.glob("*.tmp"))
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored["status"] == "finished" and stored["best_epoch"] == result.best_epoch
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "dice_volume_mean" in rows[0]
    with open(run_dir / "per_patient_dice.csv") as f:
        assert {"patient", "split", "dice", "tumour_pixels_true", "tumour_pixels_pred"} <= set(next(csv.DictReader(f)))


def test_finished_run_is_returned_without_training(finished_run, synthetic_prepared):
    cfg, run_dir, _, result = finished_run
    calls = []
    again = fit(cfg, synthetic_prepared, run_dir, on_epoch=calls.append)
    assert calls == []
    assert again.to_dict()["history"] == result.to_dict()["history"]


def test_checkpoint_rebuilds_model_and_predicts(finished_run, synthetic_prepared):
    cfg, run_dir, _, result = finished_run
    model, loaded_cfg, ckpt = load_checkpoint(run_dir / "best.pt")
    assert loaded_cfg == cfg and ckpt["epoch"] == result.best_epoch
    images = PreparedData(synthetic_prepared).load("val").image[:3]
    probs = predict_masks(model, images, "cpu", image_size=cfg.image_size)
    assert probs.shape == (3, 256, 256) and probs.dtype == np.float32
    assert 0.0 <= probs.min() and probs.max() <= 1.0
    with pytest.raises(ValueError, match="uint8"):
        predict_masks(model, images.astype(np.float32), "cpu")


def test_damaged_checkpoint_is_named(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="best.pt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_divergence_stops_without_raising(synthetic_prepared, tmp_path):
    reports = []
    # lr 1e12: the first steps overflow the weights (1e6 is not always enough: BatchNorm rescales activations)
    cfg = tiny_cfg(optimizer="sgd", lr=1e12, epochs=4, max_steps=3)
    result = fit(cfg, synthetic_prepared, tmp_path / "run", on_epoch=reports.append)
    assert result.status == "diverged"
    assert reports[-1].status == "diverged" and not np.isfinite(reports[-1].metrics["loss"])
    assert result.epochs_completed == len(reports) - 1 < 4
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"
    torch.manual_seed(0)  # leave the global RNG usable for later tests


def test_cuda_graph_setting_maps_to_step_mode():
    from orchestrator.training.step import step_mode

    assert [step_mode(m) for m in ("auto", "on", "off", "graph", "eager")] == ["auto", "graph", "eager", "graph",
                                                                               "eager"]
    with pytest.raises(ValueError, match="cuda_graph='sometimes'"):
        step_mode("sometimes")
