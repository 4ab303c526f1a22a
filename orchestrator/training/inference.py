"""Evaluation passes shared by the loop, ``orch predict`` and the plots: on-device metric accumulation with one
host transfer per pass, and batched prediction of probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from orchestrator.metrics import (
    SliceCounter,
    compute_metrics,
    per_patient_dice,
    slice_counts_numpy,
)
from orchestrator.postprocess import postprocess_volumes, scaled_min_voxels
from orchestrator.training.data import BatchMaker, DeviceSplit, normalise
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


@torch.no_grad()
def evaluate_split(model: nn.Module, split: DeviceSplit, loss_fn: LossFn, amp_dtype: torch.dtype | None,
                   batch_size: int, rank: int = 0, world: int = 1, tta: bool = False,
                   min_component: int = 0) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Every evaluation metric plus ``val_loss`` on ``split``, and its per-patient Dice rows.

    ``tta``: flip test-time augmentation. ``min_component`` (voxels at 256 px): drop smaller 3D components of each
    patient's predicted volume before scoring (the predicted masks then make one trip to the host).
    Under DDP each rank scores every ``world``-th batch and the counts are all-reduced (pass the unwrapped
    module: ranks run different numbers of forwards)."""
    was_training = model.training
    model.eval()
    device = split.images.device
    counter = SliceCounter(len(split), device)
    size = split.masks.shape[-1]
    min_voxels = scaled_min_voxels(min_component, size)
    preds = torch.zeros(len(split), size, size, dtype=torch.uint8, device=device) if min_voxels else None
    make = BatchMaker(split)
    for b, start in enumerate(range(0, len(split), batch_size)):
        if b % world != rank:
            continue
        idx = torch.arange(start, min(start + batch_size, len(split)), device=device)
        x, y = make(idx, augment=False)
        logits = forward_logits(model, x, amp_dtype, tta)
        counter.add(start, logits, y, loss_fn(logits, y) * len(idx))
        if preds is not None:
            preds[start : start + len(idx)] = (logits[:, 0] > 0).to(torch.uint8)
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
    return metrics, per_patient_dice(counts, split.patients)


@torch.no_grad()
def predict_masks(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, device: str | torch.device,
                  image_size: int | None = None, batch_size: int = 32,
                  amp_dtype: torch.dtype | None = None, tta: bool = False) -> np.ndarray:
    """Tumour probabilities (N, H, W) float32 for images (N, H, W, 3) uint8, at the input's resolution.

    With ``image_size`` the model sees images resized to that square size (as it was trained) and the
    probabilities are resized back. ``tta``: average with the mirrored image's prediction. Threshold at 0.5 for
    masks."""
    device = torch.device(device)
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    images = torch.as_tensor(np.asarray(images_uint8) if not isinstance(images_uint8, torch.Tensor) else images_uint8)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {tuple(images.shape)} {images.dtype}")
    n, h, w, _ = images.shape
    out = np.empty((n, h, w), dtype=np.float32)
    for s in range(0, n, batch_size):
        x = normalise(images[s : s + batch_size].to(device))
        if image_size is not None and image_size != h:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        logits = forward_logits(model, x.contiguous(memory_format=torch.channels_last), amp_dtype, tta)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        out[s : s + batch_size] = torch.sigmoid(logits[:, 0]).cpu().numpy()
    return out
