"""The recipe's levers, each on its own: lr schedules, tumour-aware sampling, intensity augmentation, flip TTA and
3D post-processing (tiny tensors, CPU, seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from orchestrator.config import ConfigError, TrainConfig
from orchestrator.postprocess import postprocess_volumes, remove_small_components, scaled_min_voxels
from orchestrator.training import fit
from orchestrator.training.data import DeviceSplit, EpochSampler, random_intensity
from orchestrator.training.inference import evaluate_split, forward_logits
from orchestrator.training.schedule import LRSchedule, lr_factor
from orchestrator.training.step import make_loss
from tests.training.training_helpers import tiny_cfg


def test_lr_factor_warms_up_then_follows_the_schedule():
    total, warm = 100, 10
    assert [lr_factor("cosine", s, total, warm) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor("cosine", warm, total, warm) == pytest.approx(1.0)
    assert lr_factor("cosine", 55, total, warm) == pytest.approx(0.5)
    assert lr_factor("cosine", total - 1, total, warm) < 0.001
    assert lr_factor("poly", 55, total, warm) == pytest.approx(0.5 ** 0.9)
    assert lr_factor("constant", 99, total, warm) == 1.0 and lr_factor("constant", 0, total, 0) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("step", 50, total, warm)


@pytest.mark.parametrize("lr", [0.1, torch.tensor(0.1)])
def test_schedule_sets_float_and_tensor_rates_in_place(lr):
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=lr)
    group_lr = opt.param_groups[0]["lr"]
    sched = LRSchedule(opt, 0.1, "cosine", warmup_epochs=1, epochs=4, steps_per_epoch=5)
    sched(2)  # warm-up: 3/5 of the rate
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.06)
    if isinstance(lr, torch.Tensor):  # the same tensor (a captured step reads it on replay), a new value
        assert opt.param_groups[0]["lr"] is group_lr
    off = LRSchedule(opt, 0.1, "constant", warmup_epochs=0, epochs=4, steps_per_epoch=5)
    off(7)
    assert not off.active and float(opt.param_groups[0]["lr"]) == pytest.approx(0.06)  # untouched


def test_fit_follows_the_cosine_curve(synthetic_prepared, tmp_path):
    cfg = tiny_cfg(epochs=3, schedule="cosine", warmup_epochs=1.0)
    result = fit(cfg, synthetic_prepared, tmp_path / "run")
    lrs = [h["learning_rate"] for h in result.history]
    assert lrs[0] == pytest.approx(cfg.lr)  # end of the warm-up epoch
    assert lrs[0] > lrs[1] > lrs[2] > 0 and lrs[2] < 0.2 * cfg.lr  # last step of 6: 3/4 down the cosine


def test_config_rejects_bad_lever_values():
    for bad, match in (({"schedule": "step"}, "schedule"), ({"sampling": "rare"}, "sampling"),
                       ({"tumour_fraction": 1.0}, "tumour_fraction"), ({"warmup_epochs": 3, "epochs": 2}, "warmup"),
                       ({"min_component": -1}, "min_component"), ({"fold": 2}, "fold"), ({"folds": 1}, "folds"),
                       ({"fold": 6, "folds": 5}, "fold")):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad)


def _split(masks: torch.Tensor, patients=None) -> DeviceSplit:
    n = masks.shape[0]
    images = (masks[..., None].repeat(1, 1, 1, 3) * 200).to(torch.uint8)
    return DeviceSplit("t", images, masks.to(torch.uint8), np.asarray(patients or ["TCGA_AA_1"] * n),
                       np.arange(1, n + 1))


def test_tumour_sampling_draws_the_asked_share_and_is_seeded():
    masks = torch.zeros(100, 8, 8)
    masks[:10, 2:4, 2:4] = 1  # 10 % of the slices hold tumour
    split = _split(masks)
    s = EpochSampler(split, "tumour", tumour_fraction=0.5, seed=3)
    draws = torch.cat([s.order(e) for e in range(1, 41)])
    share = (draws < 10).float().mean().item()
    assert 0.45 < share < 0.55
    assert torch.equal(s.order(7), EpochSampler(split, "tumour", 0.5, seed=3).order(7))
    assert not torch.equal(s.order(7), s.order(8))
    uniform = EpochSampler(split, "uniform", seed=3).order(1)
    assert sorted(uniform.tolist()) == list(range(100))  # a permutation: every slice once


def test_intensity_augmentation_changes_contrast_within_range():
    torch.manual_seed(0)
    x = torch.linspace(0, 255, 16 * 16).reshape(1, 1, 16, 16).repeat(8, 3, 1, 1)
    y = random_intensity(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
    assert not torch.allclose(y, x)
    assert (y[:, 0] - y[:, 1]).abs().max() > 0  # channels get their own gain


def test_remove_small_components_in_3d():
    vol = np.zeros((4, 10, 10), bool)
    vol[0:3, 2:5, 2:5] = True  # a 27-voxel tumour across three slices
    vol[3, 8, 8] = True  # a lone false-positive voxel
    kept = remove_small_components(vol, 5)
    assert kept[0:3, 2:5, 2:5].all() and not kept[3, 8, 8]
    assert np.array_equal(remove_small_components(vol, 0), vol)
    assert scaled_min_voxels(400, 128) == 100 and scaled_min_voxels(1, 32) == 1 and scaled_min_voxels(0, 64) == 0
    # per patient: the same 3-voxel blob is small beside nothing, for each patient on its own
    two = np.zeros((4, 6, 6), bool)
    two[0, 0, 0:3] = True
    two[2, 0, 0:3] = True
    out = postprocess_volumes(two, np.array(["a", "a", "b", "b"]), 4)
    assert not out.any()


class _Threshold(nn.Module):
    """A fixed 'model': tumour where the normalised first channel is bright, plus a mirror-asymmetric bias."""

    def forward(self, x):
        w = torch.linspace(-1, 1, x.shape[-1], device=x.device)
        return (x[:, :1] > 0).float() * 20 - 10 + w


def test_tta_averages_the_mirrored_prediction():
    x = torch.randn(2, 3, 8, 8)
    m = _Threshold()
    plain, tta = forward_logits(m, x, None), forward_logits(m, x, None, tta=True)
    assert torch.allclose(tta, (plain + m(x.flip(-1)).flip(-1)) / 2)
    assert not torch.allclose(tta, plain)


def test_evaluation_post_processing_removes_a_false_positive():
    truth = torch.zeros(3, 32, 32)
    truth[0:2, 8:20, 8:20] = 1  # the tumour, on two slices
    split = _split(truth)
    split.images[2, 30:32, 30:32] = 200  # a bright 4-pixel spot on the last slice: the model calls it tumour
    loss = make_loss("bce")
    raw, _ = evaluate_split(_Threshold(), split, loss, None, batch_size=2)
    clean, rows = evaluate_split(_Threshold(), split, loss, None, batch_size=2, min_component=400)  # 6 voxels at 32 px
    assert raw["dice_volume_mean"] < 1.0
    assert clean["dice_volume_mean"] == pytest.approx(1.0) and rows[0]["tumour_pixels_pred"] == 2 * 144
    assert math.isclose(clean["val_loss"], raw["val_loss"])  # the loss is of the logits, before post-processing
