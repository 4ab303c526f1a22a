"""A run's test metrics are scored at the masks' native resolution (256 px), whatever ``image_size`` the model was
trained at, so ``orch predict`` + ``orch evaluate`` on the same test patients reproduce them; and the test pass
records the predict-nothing baseline of those very slices."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from data_prep import PreparedData
from orchestrator.cli import main
from orchestrator.metrics import EVAL_METRICS, baseline_metrics, compute_metrics, empty_prediction_counts
from orchestrator.results_schema import BASELINE_METRICS, baseline_key
from orchestrator.training import fit, load_checkpoint
from orchestrator.training.data import load_split, resize_uint8
from orchestrator.training.inference import evaluate_split, predict_masks, resize_images
from orchestrator.training.step import make_loss
from tests.training.training_helpers import tiny_cfg

NATIVE = 256


@pytest.fixture(scope="module")
def trained(synthetic_prepared, tmp_path_factory):
    """A tiny model trained at 32 px (a few steps: its predictions have edges to resample), its config and run."""
    cfg = tiny_cfg(epochs=2, max_steps=6)
    run_dir = tmp_path_factory.mktemp("native") / "run"
    result = fit(cfg, synthetic_prepared, run_dir)
    model, loaded, _ = load_checkpoint(run_dir / "best.pt")
    return model, loaded, run_dir, result


def _test_pass(model, cfg, data, image_size):
    """The loop's test pass over the whole test split loaded natively, the model working at ``image_size``
    (channels-last, as the loop and ``predict_masks`` hold it: the convolutions then add up alike)."""
    model = model.to(memory_format=torch.channels_last)
    split = load_split(PreparedData(data), "test", torch.device("cpu"), None)
    assert split.masks.shape[-1] == NATIVE
    return evaluate_split(model, split, make_loss(cfg.loss), None, cfg.eval_batch_size, tta=cfg.tta,
                          min_component=cfg.min_component, image_size=image_size, baseline=True)


def _predict_and_evaluate(run_dir, data, tmp_path) -> dict:
    """``orch predict`` of the test patients' slice folders, then ``orch evaluate`` against their truth masks."""
    kaggle = data.parent / "src" / "kaggle_3m"
    patients = PreparedData(data).patients("test")
    runner = CliRunner()
    for folder in sorted(p for p in kaggle.iterdir() if p.is_dir() and p.name.startswith(tuple(patients))):
        done = runner.invoke(main, ["predict", str(run_dir / "best.pt"), str(folder), str(tmp_path / "pred"),
                                    "--device", "cpu", "--no-overlays"])
        assert done.exit_code == 0, done.output
    done = runner.invoke(main, ["evaluate", str(tmp_path / "pred"), str(kaggle), "--predicted-patients-only",
                                "--json", str(tmp_path / "metrics.json")])
    assert done.exit_code == 0, done.output
    return json.loads((tmp_path / "metrics.json").read_text())


def test_test_pass_equals_predict_then_evaluate(trained, synthetic_prepared, tmp_path):
    model, cfg, run_dir, _ = trained
    assert cfg.image_size == 32
    ours, rows = _test_pass(model, cfg, synthetic_prepared, cfg.image_size)
    theirs = _predict_and_evaluate(run_dir, synthetic_prepared, tmp_path)
    assert 0 < sum(r["tumour_pixels_pred"] for r in rows) < theirs["slices"] * NATIVE * NATIVE  # edges to resample
    for m in EVAL_METRICS:
        assert ours[m] == pytest.approx(theirs["metrics"][m], abs=1e-6, nan_ok=True), m
    folders = {r["patient"]: r["dice"] for r in theirs["per_patient"]}  # truth folders: <patient>_<date>
    assert len(folders) == len(rows)
    for r in rows:
        (folder,) = [f for f in folders if f.startswith(r["patient"])]
        assert r["dice"] == pytest.approx(folders[folder], abs=1e-6)


def test_scoring_at_model_size_gave_other_figures(trained, synthetic_prepared):
    """Before: the test split was loaded at ``image_size`` and scored against downsampled masks."""
    model, cfg, *_ = trained
    native, _ = _test_pass(model, cfg, synthetic_prepared, cfg.image_size)
    small = load_split(PreparedData(synthetic_prepared), "test", torch.device("cpu"), cfg.image_size)
    old, _ = evaluate_split(model, small, make_loss(cfg.loss), None, cfg.eval_batch_size)
    assert old["pixel_accuracy"] != pytest.approx(native["pixel_accuracy"], abs=1e-6)
    assert old["val_loss"] == pytest.approx(native["val_loss"], rel=1e-5)  # the loss stays at the model's size


def test_baseline_is_the_empty_prediction_of_the_same_slices(trained, synthetic_prepared):
    model, cfg, *_ = trained
    metrics, _ = _test_pass(model, cfg, synthetic_prepared, cfg.image_size)
    masks = load_split(PreparedData(synthetic_prepared), "test", torch.device("cpu"), None)
    truth = masks.masks.numpy()
    counts = np.stack([np.zeros(len(truth)), np.zeros(len(truth)), truth.reshape(len(truth), -1).sum(1)], 1)
    direct = compute_metrics(counts.astype(np.int64), masks.patients, NATIVE * NATIVE)
    assert {baseline_key(m) for m in BASELINE_METRICS} <= set(metrics)
    for m in BASELINE_METRICS:
        assert metrics[baseline_key(m)] == pytest.approx(direct[m], abs=1e-12)
    assert metrics[baseline_key("dice_volume_mean")] == 0.0  # every synthetic test patient has tumour
    assert 0.3 < metrics[baseline_key("miou_2class")] < 0.5  # background IoU ~1, tumour IoU 0


def test_fit_records_the_native_test_metrics(trained, synthetic_prepared):
    """``fit``'s own test figures (result.json, results.csv) are the native ones, with the baseline beside them."""
    model, cfg, _, result = trained
    native, _ = _test_pass(model, cfg, synthetic_prepared, cfg.image_size)
    for m in (*EVAL_METRICS, *(baseline_key(b) for b in BASELINE_METRICS)):
        assert result.test.get(m) == pytest.approx(native[m], abs=1e-6, nan_ok=True), m


def test_empty_prediction_counts_keep_only_the_truth():
    counts = np.array([[3, 5, 4], [0, 2, 0], [0, 0, 7]])
    np.testing.assert_array_equal(empty_prediction_counts(counts), [[0, 0, 4], [0, 0, 0], [0, 0, 7]])
    got = baseline_metrics(counts, ["a", "a", "b"], 16)
    assert got["dice_volume_mean"] == 0.0 and got["dice_slice_all_empty1"] == pytest.approx(1 / 3)
    assert got["pixel_accuracy"] == pytest.approx(1 - 11 / 48)


def test_predict_resizes_images_as_training_does():
    """``predict_masks`` feeds the model the very pixels ``load_split`` trains on (uint8, rounded)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=gen)
    masks = (torch.rand(3, 64, 64, generator=gen) > 0.7).to(torch.uint8)
    assert torch.equal(resize_images(images, 32), resize_uint8(images, masks, 32)[0])
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return torch.zeros(x.shape[0], 1, *x.shape[-2:])

    probs = predict_masks(Spy(), images.numpy(), "cpu", image_size=32)
    assert probs.shape == (3, 64, 64) and seen[0].shape == (3, 3, 32, 32)
    from orchestrator.training.data import normalise

    assert torch.equal(seen[0], normalise(resize_uint8(images, masks, 32)[0]))
