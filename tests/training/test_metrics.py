"""orchestrator.metrics against a plain numpy reference written from docs/design.md's definitions, on hand-made
masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestrator.metrics import (
    EVAL_METRICS,
    SliceCounter,
    compute_metrics,
    per_patient_dice,
    slice_counts,
    slice_counts_numpy,
)


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    den = p.sum() + t.sum()
    return 1.0 if den == 0 else 2.0 * (p & t).sum() / den


def reference(pred: np.ndarray, truth: np.ndarray, patients: list[str]) -> dict[str, float]:
    """Loops over boolean masks (N, H, W): the definitions, nothing clever."""
    patients_arr = np.array(patients)
    vol = [_dice(pred[patients_arr == q], truth[patients_arr == q]) for q in dict.fromkeys(patients)]
    per_slice = [_dice(pred[i], truth[i]) for i in range(len(pred))]
    pos = [per_slice[i] for i in range(len(pred)) if truth[i].any()]
    inter, union = (pred & truth).sum(), (pred | truth).sum()
    bg_inter, bg_union = (~pred & ~truth).sum(), (~pred | ~truth).sum()
    iou_t = 1.0 if union == 0 else inter / union
    return {
        "dice_volume_mean": float(np.mean(vol)),
        "dice_global": _dice(pred, truth),
        "dice_slice_pos": float(np.mean(pos)) if pos else float("nan"),
        "dice_slice_all_empty1": float(np.mean(per_slice)),
        "iou_tumour": float(iou_t),
        "miou_2class": float((iou_t + bg_inter / bg_union) / 2),
        "pixel_accuracy": float((pred == truth).mean()),
    }


def _square(n: int, y: int, x: int, size: int) -> np.ndarray:
    m = np.zeros((n, n), dtype=bool)
    m[y : y + size, x : x + size] = True
    return m


def _case(name: str):
    e = np.zeros((8, 8), dtype=bool)
    if name == "empty_vs_empty":
        return np.stack([e, e]), np.stack([e, e]), ["a", "a"]
    if name == "empty_truth_predicted":
        return np.stack([_square(8, 0, 0, 2), e]), np.stack([e, e]), ["a", "a"]
    if name == "partial_overlap":
        return np.stack([_square(8, 0, 0, 4)]), np.stack([_square(8, 2, 2, 4)]), ["a"]
    if name == "several_patients":
        pred = np.stack([_square(8, 0, 0, 4), e, _square(8, 4, 4, 2), _square(8, 1, 1, 3), e])
        truth = np.stack([_square(8, 1, 1, 4), e, e, _square(8, 1, 1, 3), _square(8, 5, 5, 3)])
        return pred, truth, ["p1", "p1", "p2", "p3", "p3"]
    raise KeyError(name)


CASES = ["empty_vs_empty", "empty_truth_predicted", "partial_overlap", "several_patients"]


@pytest.mark.parametrize("name", CASES)
def test_metrics_match_numpy_reference(name):
    pred, truth, patients = _case(name)
    counts = slice_counts_numpy(pred, truth)
    got = compute_metrics(counts, patients, pixels_per_slice=64)
    want = reference(pred, truth, patients)
    assert list(got) == list(EVAL_METRICS)
    for k in EVAL_METRICS:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k, equal_nan=True)


def test_hand_values():
    # partial overlap: two 4x4 squares offset by 2 -> intersection 4, Dice 2*4/32, IoU 4/28
    got = compute_metrics(slice_counts_numpy(*_case("partial_overlap")[:2]), ["a"], 64)
    assert got["dice_global"] == pytest.approx(0.25)
    assert got["iou_tumour"] == pytest.approx(4 / 28)
    assert got["pixel_accuracy"] == pytest.approx(40 / 64)
    # predicting nothing: 0 on tumour metrics, the share of empty slices on dice_slice_all_empty1
    pred, truth, patients = _case("several_patients")
    nothing = compute_metrics(slice_counts_numpy(np.zeros_like(pred), truth), patients, 64)
    assert nothing["dice_volume_mean"] == pytest.approx(1 / 3)  # p1, p3: 0; p2 (no tumour, none predicted): 1
    assert nothing["dice_slice_all_empty1"] == pytest.approx(2 / 5)
    assert nothing["dice_global"] == 0 and nothing["iou_tumour"] == 0


def test_per_patient_rows_in_first_seen_order():
    pred, truth, patients = _case("several_patients")
    rows = per_patient_dice(slice_counts_numpy(pred, truth), patients)
    assert [r["patient"] for r in rows] == ["p1", "p2", "p3"]
    assert rows[0]["tumour_pixels_true"] == 16 and rows[0]["tumour_pixels_pred"] == 16
    assert rows[1]["dice"] == 0.0  # predicted tumour where there is none


def test_device_counter_matches_numpy_counts():
    pred, truth, patients = _case("several_patients")
    counter = SliceCounter(len(pred), torch.device("cpu"))
    logits = torch.where(torch.from_numpy(pred), 3.0, -3.0)[:, None]  # (N, 1, H, W); threshold at logit 0
    target = torch.from_numpy(truth).float()[:, None]
    counter.add(0, logits[:3], target[:3], torch.tensor(1.5))
    counter.add(3, logits[3:], target[3:], torch.tensor(0.5))
    counts, loss = counter.to_host()
    np.testing.assert_array_equal(counts, slice_counts_numpy(pred, truth))
    np.testing.assert_array_equal(slice_counts(torch.from_numpy(pred), torch.from_numpy(truth)).numpy(), counts)
    assert loss == 2.0


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        compute_metrics(np.zeros((0, 3)), [], 64)
    with pytest.raises(ValueError, match="patient ids"):
        compute_metrics(np.zeros((2, 3)), ["a"], 64)
