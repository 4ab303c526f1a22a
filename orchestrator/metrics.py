"""Segmentation metrics shared by training and ``orch evaluate`` (names: docs/design.md).

Everything derives from three integer counts per slice: true positives, predicted pixels, true pixels.
Training accumulates those counts on the device (``SliceCounter``: one (N, 3) int64 tensor, written batch by
batch without host syncs) and moves them to the host once per evaluation; ``orch evaluate`` builds the same
(N, 3) array from numpy masks with ``slice_counts_numpy``. ``compute_metrics`` turns counts into metrics.

Conventions (written once, here): a pixel is tumour where its float32 probability ``sigmoid(logit)`` is at least
0.5 (``tumour_mask``: the rule ``orch predict`` applies to the probabilities it writes, so training's test pass
and ``orch predict`` + ``orch evaluate`` threshold alike); a Dice or IoU whose union is empty (nothing true,
nothing predicted) scores 1 -- this only happens for empty slices, or for a patient/split without tumour, never
on LGG patient volumes, which all hold tumour.

``baseline_metrics`` scores a model that predicts nothing on the same slices (counts only): the figure a
segmentation must beat on these very patients (on LGG, 65 % of the slices are empty and score Dice 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# The validation/test metric names, in report order (train-side names: loss, it_per_s, img_per_s, epoch_time_s).
EVAL_METRICS = (
    "dice_volume_mean",
    "dice_global",
    "dice_slice_pos",
    "dice_slice_all_empty1",
    "iou_tumour",
    "miou_2class",
    "pixel_accuracy",
)
TP, PRED, TRUE = 0, 1, 2  # columns of a counts array
THRESHOLD = 0.5  # probability


def tumour_mask(logits: torch.Tensor) -> torch.Tensor:
    """Boolean tumour mask of logits: ``sigmoid(logits) >= THRESHOLD`` in float32, exactly as ``orch predict``
    thresholds the probabilities of ``predict_masks`` (``logits > 0`` would differ where a tiny negative logit's
    probability rounds to 0.5)."""
    return torch.sigmoid(logits.float()) >= THRESHOLD


def slice_counts(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-slice counts of boolean/0-1 masks (B, H, W) or (B, 1, H, W) -> (B, 3) int64 [tp, pred, true]."""
    p = pred.reshape(pred.shape[0], -1).bool()
    t = truth.reshape(truth.shape[0], -1).bool()
    return torch.stack([(p & t).sum(1), p.sum(1), t.sum(1)], dim=1).to(torch.int64)


def slice_counts_numpy(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The numpy twin of ``slice_counts`` for masks (B, H, W): nonzero means tumour."""
    p = pred.reshape(pred.shape[0], -1) != 0
    t = truth.reshape(truth.shape[0], -1) != 0
    return np.stack([(p & t).sum(1), p.sum(1), t.sum(1)], axis=1).astype(np.int64)


class SliceCounter:
    """Device-side accumulator of per-slice counts and of a summed loss for one evaluation pass.

    ``add(start, logits, truth, loss_sum)`` writes rows ``start:start+B`` (``tumour_mask`` of the logits against
    the truth, of the same size; no host sync);
    ``all_reduce()`` sums across ranks (each rank fills its own rows, others stay 0);
    ``to_host()`` is the single transfer: (counts (N, 3) int64 ndarray, loss sum float)."""

    def __init__(self, n: int, device: torch.device):
        self.counts = torch.zeros(n, 3, dtype=torch.int64, device=device)
        self.loss = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, start: int, logits: torch.Tensor, truth: torch.Tensor, loss_sum: torch.Tensor | None = None) -> None:
        self.counts[start : start + logits.shape[0]] = slice_counts(tumour_mask(logits), truth)
        if loss_sum is not None:
            self.loss += loss_sum.detach().to(torch.float64)

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.counts)
            dist.all_reduce(self.loss)

    def to_host(self) -> tuple[np.ndarray, float]:
        both = torch.cat([self.counts.to(torch.float64).flatten(), self.loss.reshape(1)]).cpu().numpy()
        return both[:-1].reshape(-1, 3).astype(np.int64), float(both[-1])


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num/den with 0/0 -> 1 (empty against empty is a perfect match)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.ones_like(den)
    np.divide(num, den, out=out, where=den > 0)
    return out


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """Dice per row of an (N, 3) counts array."""
    return _ratio(2.0 * counts[:, TP], counts[:, PRED] + counts[:, TRUE])


def compute_metrics(counts: np.ndarray, patients: Sequence[str] | np.ndarray,
                    pixels_per_slice: int) -> dict[str, float]:
    """Every docs/design.md evaluation metric from per-slice counts (N, 3) and the patient id of each slice."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[1] != 3 or len(counts) == 0:
        raise ValueError(f"counts must be a non-empty (N, 3) array, got shape {counts.shape}")
    patients = np.asarray(patients)
    if len(patients) != len(counts):
        raise ValueError(f"{len(patients)} patient ids for {len(counts)} slices")
    tp, pred, true = (counts[:, i].sum(dtype=np.int64) for i in (TP, PRED, TRUE))
    total = pixels_per_slice * len(counts)
    slice_dice = dice_from_counts(counts)
    pos = counts[:, TRUE] > 0
    iou_t = float(_ratio(tp, pred + true - tp))
    tn = total - pred - true + tp
    iou_bg = float(_ratio(tn, total - tp))
    return {
        "dice_volume_mean": float(np.mean([d["dice"] for d in per_patient_dice(counts, patients)])),
        "dice_global": float(_ratio(2.0 * tp, pred + true)),
        "dice_slice_pos": float(slice_dice[pos].mean()) if pos.any() else float("nan"),
        "dice_slice_all_empty1": float(slice_dice.mean()),
        "iou_tumour": iou_t,
        "miou_2class": (iou_t + iou_bg) / 2.0,
        "pixel_accuracy": float((tp + tn) / total),
    }


def empty_prediction_counts(counts: np.ndarray) -> np.ndarray:
    """The counts of a model that predicts nothing on the slices of ``counts``: their true pixels, no prediction."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros_like(counts)
    out[:, TRUE] = counts[:, TRUE]
    return out


def baseline_metrics(counts: np.ndarray, patients: Sequence[str] | np.ndarray,
                     pixels_per_slice: int) -> dict[str, float]:
    """``compute_metrics`` of the predict-nothing model on exactly the slices of ``counts``: the baseline of these
    patients (the full LGG's figures differ from a sample's or a synthetic set's)."""
    return compute_metrics(empty_prediction_counts(counts), patients, pixels_per_slice)


def per_patient_dice(counts: np.ndarray, patients: Sequence[str] | np.ndarray) -> list[dict]:
    """Volume Dice per patient (first-seen order): dicts with patient, dice, tumour_pixels_true/_pred."""
    patients = np.asarray(patients)
    names, first, inverse = np.unique(patients, return_index=True, return_inverse=True)
    sums = np.zeros((len(names), 3), dtype=np.int64)
    np.add.at(sums, inverse, np.asarray(counts, dtype=np.int64))
    dice = dice_from_counts(sums)
    order = np.argsort(first)
    return [
        {
            "patient": str(names[i]),
            "dice": float(dice[i]),
            "tumour_pixels_true": int(sums[i, TRUE]),
            "tumour_pixels_pred": int(sums[i, PRED]),
        }
        for i in order
    ]
