"""Device-resident data: a split's uint8 slices loaded once onto the device, batches gathered, augmented and
normalised there (no per-step host work, no DataLoader).

Shapes: ``DeviceSplit.images`` (N, S, S, 3) uint8 -- NHWC, so ``images[idx].permute(0, 3, 1, 2)`` is already a
channels-last (B, 3, S, S) tensor -- and ``masks`` (N, S, S) uint8 in {0, 1}; S = 256, or ``image_size``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models import NORMALIZE_MEAN, NORMALIZE_STD

log = logging.getLogger(__name__)

MAX_ROTATION_DEG = 15.0  # small rotations ...
MAX_SCALE = 0.10  # ... and scaling (+-10 %), plus left-right flips: brains are roughly symmetric
MAX_GAIN = 0.10  # intensity: per-channel brightness +-10 % (the three MR sequences vary independently) ...
MAX_GAMMA = 1.25  # ... and one gamma in [1/1.25, 1.25] per slice (contrast between scanners and sites)
_RESIZE_CHUNK = 256  # slices resized at a time (bounds the float32 working memory)


@dataclass
class DeviceSplit:
    """One split on the device: images (N, S, S, 3) uint8, masks (N, S, S) uint8, host-side ids per slice."""

    name: str
    images: torch.Tensor
    masks: torch.Tensor
    patients: np.ndarray  # (N,) str
    slices: np.ndarray  # (N,) int

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def pixels_per_slice(self) -> int:
        return int(self.masks.shape[1] * self.masks.shape[2])


def open_data(data: Any, cfg: Any = None) -> Any:
    """A ``PreparedData`` for a path, or the PreparedData-like object itself (has ``load`` and ``patients``);
    with a ``cfg`` (TrainConfig) that names a cross-validation fold, that fold's view of it."""
    if isinstance(data, (str, Path)):
        from data_prep import PreparedData

        data = PreparedData(data)
    if not (hasattr(data, "load") and hasattr(data, "patients")):
        raise TypeError(f"data must be a prepared-data directory or a PreparedData, got {type(data).__name__}")
    if cfg is not None and cfg.folds:
        if cfg.fold is None:
            raise ValueError(f"folds={cfg.folds} without fold: train one fold at a time "
                             "(orchestrator.training.cv.run_cv runs them all)")
        from data_prep.folds import FoldData

        data = FoldData(data, cfg.folds, cfg.fold)
    return data


def _keep_whole_patients(patients: np.ndarray, max_slices: int | None) -> np.ndarray:
    """Boolean mask (N,): whole patients, in order, while their slices fit into ``max_slices`` (>= 1 patient)."""
    keep = np.ones(len(patients), dtype=bool)
    if max_slices is None:
        return keep
    names, first, counts = np.unique(patients, return_index=True, return_counts=True)
    chosen, total = [], 0
    for i in np.argsort(first):
        if chosen and total + counts[i] > max_slices:
            break
        chosen.append(names[i])
        total += counts[i]
    return np.isin(patients, chosen)


def load_split(data: Any, split: str, device: torch.device, image_size: int | None = None,
               max_slices: int | None = None) -> DeviceSplit:
    """Load a split's slices once onto ``device`` (resized to ``image_size`` there, if given)."""
    arr = data.load(split)
    patients = np.asarray(arr.patient).astype(str)
    if len(patients) == 0:
        raise ValueError(f"split {split!r} of the prepared data holds no slices; re-run `orch prep` with more patients")
    keep = _keep_whole_patients(patients, max_slices)
    images = torch.from_numpy(np.ascontiguousarray(arr.image[keep])).to(device)
    masks = torch.from_numpy(np.ascontiguousarray(arr.mask[keep])).to(device)
    if image_size is not None and image_size != images.shape[1]:
        images, masks = resize_uint8(images, masks, image_size)
    log.info("loaded %s: %d slices of %s on %s", split, len(images), tuple(images.shape[1:]), device)
    return DeviceSplit(split, images, masks, patients[keep], np.asarray(arr.slice)[keep])


def resize_uint8(images: torch.Tensor, masks: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize (N, H, W, 3) uint8 images (bilinear, antialiased) and (N, H, W) {0,1} masks (area, then >= 0.5)."""
    out_i, out_m = [], []
    for s in range(0, images.shape[0], _RESIZE_CHUNK):
        x = images[s : s + _RESIZE_CHUNK].permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out_i.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous())
        m = F.interpolate(masks[s : s + _RESIZE_CHUNK, None].float(), size=(size, size), mode="area")
        out_m.append((m[:, 0] >= 0.5).to(torch.uint8))
    return torch.cat(out_i), torch.cat(out_m)


class BatchMaker:
    """Gathers a batch from a DeviceSplit by a device index tensor and turns it into model input.

    ``__call__(idx (B,) int64, augment)`` -> (x (B, 3, S, S) float32 channels-last, normalised;
    y (B, 1, S, S) float32 in {0, 1}). With ``augment`` the enabled augmentations run: ``geometric``
    (flip, rotation, scale) and ``intensity`` (gain, gamma). Everything runs on the split's device, so it can sit
    inside a CUDA graph."""

    def __init__(self, split: DeviceSplit, geometric: bool = True, intensity: bool = False):
        self.split, self.geometric, self.intensity = split, geometric, intensity
        self.scale, self.shift = normalisation(split.images.device)

    def __call__(self, idx: torch.Tensor, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.split.images[idx].permute(0, 3, 1, 2).float()  # (B, 3, S, S), channels-last memory
        y = self.split.masks[idx].unsqueeze(1).float()  # (B, 1, S, S)
        if augment and self.geometric:
            x, y = random_affine(x, y)
        if augment and self.intensity:
            x = random_intensity(x)
        return normalise_float(x, self.scale, self.shift), y


class EpochSampler:
    """The order in which an epoch visits the training slices: a seeded permutation (``uniform``), or, with
    ``tumour``, ``len(split)`` draws with replacement of which ``tumour_fraction`` hold tumour on average (Buda et
    al. oversample tumour slices; on LGG 35 % of the slices and 1 % of the pixels are tumour). Depends only on
    (seed, epoch): identical on every DDP rank and after a resume. ``order(epoch)`` is a CPU int64 tensor."""

    def __init__(self, split: DeviceSplit, sampling: str = "uniform", tumour_fraction: float = 0.5, seed: int = 0):
        self.n, self.seed = len(split), seed
        self.weights: torch.Tensor | None = None
        if sampling == "tumour":
            pos = (split.masks.flatten(1).amax(1) > 0).cpu()  # one host transfer, at start
            n_pos = int(pos.sum())
            if 0 < n_pos < self.n:
                self.weights = torch.where(pos, tumour_fraction / n_pos, (1 - tumour_fraction) / (self.n - n_pos))
            else:
                log.warning("sampling=tumour: %d of %d training slices hold tumour; sampling uniformly", n_pos, self.n)

    def order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights.double(), self.n, replacement=True, generator=g)


def normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (1, 3, 1, 1) on ``device``: x_norm = (x/255 - mean)/std = x * scale + shift, one fused
    multiply-add on a float batch in [0, 255] (ImageNet statistics, ``models.NORMALIZE_*``)."""
    std = torch.tensor(NORMALIZE_STD, device=device).view(1, 3, 1, 1)
    mean = torch.tensor(NORMALIZE_MEAN, device=device).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std), -mean / std


def normalise_float(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 255] -> normalised, channels-last: the one normalisation of training and
    inference (``scale``, ``shift`` from :func:`normalisation`)."""
    return torch.addcmul(shift, x, scale).contiguous(memory_format=torch.channels_last)


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 channels-last, normalised as in training."""
    scale, shift = normalisation(images_uint8.device)
    return normalise_float(images_uint8.permute(0, 3, 1, 2).float(), scale, shift)


def split_slices(data: Any, split: str) -> int:
    """Slices of a split of a ``PreparedData``: from the manifest's shard table when every shard lies wholly inside
    or outside the split (nothing is read), else by loading the split."""
    members = set(data.patients(split))
    shards = data.manifest.get("shards", [])
    if all(set(s["patients"]) <= members or not set(s["patients"]) & members for s in shards):
        return sum(s["slices"] for s in shards if set(s["patients"]) <= members)
    return len(data.load(split).slice)


def random_affine(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random left-right flip, rotation (+-15 deg) and scale (+-10 %) of images (B, 3, S, S) in
    [0, 255] and masks (B, 1, S, S), in one ``grid_sample`` of the stacked 4 channels (masks re-thresholded).
    Random numbers come from the device generator: no host sync, capturable in a CUDA graph."""
    b = x.shape[0]
    u = torch.rand(b, 3, device=x.device)
    angle = (u[:, 0] * 2 - 1) * math.radians(MAX_ROTATION_DEG)
    inv_scale = 1.0 / (1.0 + (u[:, 1] * 2 - 1) * MAX_SCALE)
    flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    zero = torch.zeros_like(cos)
    # theta maps output coordinates to input coordinates; flipping the output x column mirrors the sample
    theta = torch.stack([torch.stack([cos * flip, -sin, zero], 1), torch.stack([sin * flip, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    z = F.grid_sample(torch.cat([x, y], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return z[:, :3], (z[:, 3:] >= 0.5).float()


def random_intensity(x: torch.Tensor) -> torch.Tensor:
    """Per-sample gamma and per-channel gain of images (B, 3, S, S) in [0, 255]; device RNG, capturable."""
    b = x.shape[0]
    u = torch.rand(b, 4, device=x.device)
    gamma = torch.exp((u[:, 3] * 2 - 1) * math.log(MAX_GAMMA)).view(b, 1, 1, 1)
    gain = (1.0 + (u[:, :3] * 2 - 1) * MAX_GAIN).view(b, 3, 1, 1)
    x = (x * (1.0 / 255.0)).clamp(0.0, 1.0).pow(gamma)
    return (x * (255.0 * gain)).clamp(0.0, 255.0)
