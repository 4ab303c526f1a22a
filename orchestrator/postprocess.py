"""3D post-processing of predicted masks per patient volume: drop connected tumour components that are too small.

A false positive on LGG is typically a few isolated pixels on one slice (a bright vessel, the skull rim), while a
tumour is one compact region across several slices; removing small 3D components cleans the first and spares
the second (nnU-Net chooses such a step on cross-validation). ``min_voxels`` is given at 256 x 256 (the
dataset's resolution) and scaled to the resolution the masks have.
"""

from __future__ import annotations

import numpy as np

NATIVE_SIZE = 256


def scaled_min_voxels(min_voxels: int, size: int) -> int:
    """``min_voxels`` at 256 px -> the same physical volume at ``size`` px (at least 1 when set)."""
    if min_voxels <= 0:
        return 0
    return max(1, int(round(min_voxels * (size / NATIVE_SIZE) ** 2)))


def remove_small_components(volume: np.ndarray, min_voxels: int) -> np.ndarray:
    """(N, H, W) boolean volume without the 3D components of fewer than ``min_voxels`` voxels."""
    volume = np.asarray(volume, dtype=bool)
    if min_voxels <= 0 or not volume.any():
        return volume
    # Imported here: training and predict without --min-component must not need scipy (the GPU machines'
    # images carry torch, h5py and pandas, not always scipy).
    from scipy import ndimage

    # 18-connectivity: faces and edges touch, corners do not (slices are 2.5-5 mm apart, pixels ~0.5-1 mm)
    structure = ndimage.generate_binary_structure(3, 2)
    labels, n = ndimage.label(volume, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def postprocess_volumes(pred: np.ndarray, patients: np.ndarray, min_voxels: int) -> np.ndarray:
    """Apply ``remove_small_components`` to each patient's slices of ``pred`` (N, H, W) bool; ``patients`` (N,)
    names each slice's patient (a patient's slices in slice order, as the prepared data stores them)."""
    if min_voxels <= 0:
        return pred
    out = np.asarray(pred, dtype=bool).copy()
    patients = np.asarray(patients)
    for p in np.unique(patients):
        rows = np.flatnonzero(patients == p)
        out[rows] = remove_small_components(out[rows], min_voxels)
    return out
