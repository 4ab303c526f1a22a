"""Evaluation passes shared by the loop, ``orch predict`` and the plots: on-device metric accumulation with one
host transfer per pass, and batched prediction of probabilities.

The model works at its training size (``image_size``); the test pass scores at the masks' native resolution: images
resized as in training, logits upsampled bilinearly to the native size, sigmoid, probability >= 0.5
(``metrics.tumour_mask``), against the native masks. ``predict_masks`` (``orch predict``) takes the same steps, so
``orch predict`` + ``orch evaluate`` reproduce a run's test metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from orchestrator.metrics import (
    SliceCounter,
    baseline_metrics,
    compute_metrics,
    per_patient_dice,
    slice_counts_numpy,
    tumour_mask,
)
from orchestrator.postprocess import postprocess_volumes, scaled_min_voxels
from orchestrator.results_schema import BASELINE_METRICS, baseline_key
from orchestrator.training.data import BatchMaker, DeviceSplit, normalise, resize_uint8
from orchestrator.training.step import LossFn, autocast


def forward_logits(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None, tta: bool = False
                   ) -> torch.Tensor:
    """float32 logits (B, 1, S, S) of ``model`` on ``x``; with ``tta`` the mean of the logits of ``x`` and of its
    left-right mirror (mirrored back)."""
    with autocast(x.device, amp_dtype):
        logits = model(x).float()
        if tta:
            logits = (logits + model(x.flip(-1)).float().flip(-1)) * 0.5
    return logits


@dataclass
class _EvalBatches:
    """Model input, loss target and scoring truth of an evaluation batch of ``split``.

    Without ``image_size`` (or when the split already has it) the model sees the split as it is and is scored
    there. With it -- a split loaded at the masks' native resolution -- each batch is resized as ``load_split``
    resizes training data (``resize_uint8``: the same images, and the masks the loss sees), while the metrics are
    scored on the native masks against the logits upsampled to them (``upsample_logits``), as ``orch predict`` +
    ``orch evaluate`` score."""

    split: DeviceSplit
    image_size: int | None = None

    def __post_init__(self) -> None:
        self.make = BatchMaker(self.split)
        self.native = self.image_size is not None and self.image_size != self.split.masks.shape[-1]

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x normalised, y (B, 1, S, S) float for the loss, truth (B, 1, H, W) float to score against)."""
        if not self.native:
            x, y = self.make(idx, augment=False)
            return x, y, y
        images, masks = resize_uint8(self.split.images[idx], self.split.masks[idx], self.image_size)
        return normalise(images), masks.unsqueeze(1).float(), self.split.masks[idx].unsqueeze(1).float()


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits (B, 1, S, S) at ``size`` (H, W): bilinear, as ``predict_masks`` brings them to the input's
    resolution before the sigmoid (unchanged when already that size)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


@torch.no_grad()
def evaluate_split(model: nn.Module, split: DeviceSplit, loss_fn: LossFn, amp_dtype: torch.dtype | None,
                   batch_size: int, rank: int = 0, world: int = 1, tta: bool = False,
                   min_component: int = 0, image_size: int | None = None,
                   baseline: bool = False) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Every evaluation metric plus ``val_loss`` on ``split``, and its per-patient Dice rows.

    ``tta``: flip test-time augmentation. ``min_component`` (voxels at 256 px): drop smaller 3D components of each
    patient's predicted volume before scoring (the predicted masks then make one trip to the host).
    ``image_size``: the model's size, for a split loaded at the masks' native resolution: the loss is taken at the
    model's size, the metrics at the native one (``_EvalBatches``), so a run's test metrics are the figures
    ``orch predict`` + ``orch evaluate`` give on the same patients. ``baseline``: add the predict-nothing figures
    of the same slices (``BASELINE_METRICS`` under their results.csv names ``test_baseline_<metric>``: meant for
    the test pass; counts only, no extra forward).
    Under DDP each rank scores every ``world``-th batch and the counts are all-reduced (pass the unwrapped
    module: ranks run different numbers of forwards)."""
    was_training = model.training
    model.eval()
    device = split.images.device
    counter = SliceCounter(len(split), device)
    size = split.masks.shape[-1]
    min_voxels = scaled_min_voxels(min_component, size)
    preds = torch.zeros(len(split), size, size, dtype=torch.uint8, device=device) if min_voxels else None
    batches = _EvalBatches(split, image_size)
    for b, start in enumerate(range(0, len(split), batch_size)):
        if b % world != rank:
            continue
        idx = torch.arange(start, min(start + batch_size, len(split)), device=device)
        x, y, truth = batches(idx)
        logits = forward_logits(model, x, amp_dtype, tta)
        scored = upsample_logits(logits, truth.shape[-2:])
        counter.add(start, scored, truth, loss_fn(logits, y) * len(idx))
        if preds is not None:
            preds[start : start + len(idx)] = tumour_mask(scored[:, 0]).to(torch.uint8)
    counter.all_reduce()
    counts, loss_sum = counter.to_host()  # the single device->host transfer of this pass (without min_component)
    model.train(was_training)
    if preds is not None:
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(preds)  # each rank filled its own rows; the others are 0
        kept = postprocess_volumes(preds.cpu().numpy().astype(bool), split.patients, min_voxels)
        counts = slice_counts_numpy(kept, split.masks.cpu().numpy())
    metrics = compute_metrics(counts, split.patients, split.pixels_per_slice)
    metrics["val_loss"] = loss_sum / len(split)
    if baseline:
        empty = baseline_metrics(counts, split.patients, split.pixels_per_slice)
        metrics.update({baseline_key(m): empty[m] for m in BASELINE_METRICS})
    return metrics, per_patient_dice(counts, split.patients)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, 3) uint8 images at ``size`` x ``size``, exactly as ``load_split`` resizes training data
    (``resize_uint8``, whose mask output -- of a 1-pixel placeholder here -- is dropped)."""
    placeholder = torch.zeros(images.shape[0], 1, 1, dtype=torch.uint8, device=images.device)
    return resize_uint8(images, placeholder, size)[0]


@torch.no_grad()
def predict_masks(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, device: str | torch.device,
                  image_size: int | None = None, batch_size: int = 32,
                  amp_dtype: torch.dtype | None = None, tta: bool = False) -> np.ndarray:
    """Tumour probabilities (N, H, W) float32 for images (N, H, W, 3) uint8, at the input's resolution.

    With ``image_size`` the model sees images resized to that square size exactly as in training
    (``resize_images``) and its logits are upsampled back (``upsample_logits``) before the sigmoid: the test pass
    of ``evaluate_split`` with ``image_size`` does the same. ``tta``: average with the mirrored image's
    prediction. ``metrics.tumour_mask``'s threshold (probability >= 0.5) turns them into masks."""
    device = torch.device(device)
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    images = torch.as_tensor(np.asarray(images_uint8) if not isinstance(images_uint8, torch.Tensor) else images_uint8)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {tuple(images.shape)} {images.dtype}")
    n, h, w, _ = images.shape
    out = np.empty((n, h, w), dtype=np.float32)
    for s in range(0, n, batch_size):
        batch = images[s : s + batch_size].to(device)
        if image_size is not None and image_size != h:
            batch = resize_images(batch, image_size)
        logits = forward_logits(model, normalise(batch), amp_dtype, tta)
        out[s : s + batch_size] = torch.sigmoid(upsample_logits(logits, (h, w))[:, 0]).cpu().numpy()
    return out
