"""On the real LGG sample (../shared/lgg-sample; skipped where absent): a short CPU training lowers the
validation loss, and `orch evaluate` gives an all-empty prediction the predict-nothing scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.score_masks import find_masks
from orchestrator.training import fit
from tests.training.training_helpers import tiny_cfg


@pytest.mark.slow
def test_short_cpu_training_lowers_validation_loss(sample_prepared, tmp_path):
    cfg = tiny_cfg(image_size=64, batch_size=8, max_steps=6, epochs=3, max_eval_slices=None, lr=3e-3)
    result = fit(cfg, sample_prepared, tmp_path / "run")
    losses = [h["val_loss"] for h in result.history]
    assert result.status == "finished"
    assert losses[-1] < losses[0], losses
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_evaluate_all_empty_prediction_scores_predict_nothing(lgg_sample, tmp_path):
    truth = find_masks(lgg_sample)
    empty_slices, tumour_pixels = 0, 0
    for name, path in truth.items():
        m = tifffile.imread(path)
        empty_slices += not m.any()
        tumour_pixels += int((m > 0).sum())
        out = tmp_path / "pred" / path.parent.name / name
        out.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(out, np.zeros_like(m))
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pred"), str(lgg_sample),
                                    "--json", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "m.json").read_text())["metrics"]
    n, pixels = len(truth), len(truth) * 256 * 256
    assert n == 369 and empty_slices == 369 - 106
    assert got["dice_slice_all_empty1"] == pytest.approx(empty_slices / n)  # 0.713 here, 0.651 on the full LGG
    assert got["miou_2class"] == pytest.approx((pixels - tumour_pixels) / pixels / 2)  # background IoU / 2
    for k in ("dice_volume_mean", "dice_global", "dice_slice_pos", "iou_tumour"):
        assert got[k] == 0.0
    assert "dice_slice_all_empty1" in res.output


def test_evaluate_reports_missing_predictions(lgg_sample, tmp_path):
    (tmp_path / "pred").mkdir()
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pred"), str(lgg_sample)])
    assert res.exit_code == 1
    assert "lacks 369 of the 369 masks" in res.output and "Traceback" not in res.output
