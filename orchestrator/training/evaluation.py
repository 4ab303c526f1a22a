"""Evaluation passes shared by the loop, ``orch predict`` and the plots: on-device metric accumulation with one
host transfer per pass, and batched prediction of probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from orchestrator.metrics import SliceCounter, compute_metrics, per_patient_dice
from orchestrator.training.data import BatchMaker, DeviceSplit, normalise
from orchestrator.training.step import LossFn, autocast


@torch.no_grad()
def evaluate_split(model: nn.Module, split: DeviceSplit, loss_fn: LossFn, amp_dtype: torch.dtype | None,
                   batch_size: int, rank: int = 0, world: int = 1) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Every evaluation metric plus ``val_loss`` on ``split``, and its per-patient Dice rows.

    Under DDP each rank scores every ``world``-th batch and the counts are all-reduced (pass the unwrapped
    module: ranks run different numbers of forwards)."""
    was_training = model.training
    model.eval()
    device = split.images.device
    counter = SliceCounter(len(split), device)
    make = BatchMaker(split)
    for b, start in enumerate(range(0, len(split), batch_size)):
        if b % world != rank:
            continue
        idx = torch.arange(start, min(start + batch_size, len(split)), device=device)
        x, y = make(idx, augment=False)
        with autocast(device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        counter.add(start, logits, y, loss_fn(logits, y) * len(idx))
    counter.all_reduce()
    counts, loss_sum = counter.to_host()  # the single device->host transfer of this pass
    model.train(was_training)
    metrics = compute_metrics(counts, split.patients, split.pixels_per_slice)
    metrics["val_loss"] = loss_sum / len(split)
    return metrics, per_patient_dice(counts, split.patients)


@torch.no_grad()
def predict_masks(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, device: str | torch.device,
                  image_size: int | None = None, batch_size: int = 32,
                  amp_dtype: torch.dtype | None = None) -> np.ndarray:
    """Tumour probabilities (N, H, W) float32 for images (N, H, W, 3) uint8, at the input's resolution.

    With ``image_size`` the model sees images resized to that square size (as it was trained) and the
    probabilities are resized back. Threshold at 0.5 for masks."""
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
        with autocast(device, amp_dtype):
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        out[s : s + batch_size] = torch.sigmoid(logits[:, 0]).cpu().numpy()
    return out
