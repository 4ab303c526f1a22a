"""``orch evaluate PRED TRUTH``: score predicted masks laid out like LGG against a truth tree.

Both trees hold ``<patient folder>/<folder>_<n>_mask.tif``; slices are matched by file name (so PRED may be a
flat folder or a tree), grouped into patients by the truth file's folder. Truth masks are {0, 255} (or {0, 1});
a predicted pixel is tumour when it is >= 128 in a uint8 {0..255} file (threshold 0.5), nonzero in a {0, 1}
file, >= 0.5 in a float file. The metrics are ``orchestrator.metrics``: the same code as training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.tiffs import read_tiff
from orchestrator.metrics import compute_metrics, per_patient_dice, slice_counts_numpy

log = logging.getLogger(__name__)
MASK_SUFFIXES = ("_mask.tif", "_mask.tiff")


class EvaluateError(ValueError):
    """Bad PRED or TRUTH: the message names the path, what is wrong and what to do."""


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_patient: list[dict]
    slices: int
    patients: int
    extra_predictions: int  # prediction files with no truth mask (ignored)


def find_masks(root: str | os.PathLike) -> dict[str, Path]:
    """``{file name: path}`` of every ``*_mask.tif`` under ``root``. A name seen twice (LGG copies often hold a
    second identical ``kaggle_3m`` tree) is kept once: the first in sorted walk order."""
    root = Path(root)
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(MASK_SUFFIXES) and name not in found:
                found[name] = Path(dirpath) / name
    return found


def _slice_key(path: Path) -> tuple[str, int]:
    """(patient folder, slice number) of ``.../<folder>/<folder>_<n>_mask.tif``: numeric, not lexical, order."""
    stem = path.name[: -len("_mask.tif")] if path.name.lower().endswith(".tif") else path.name[: -len("_mask.tiff")]
    number = stem.rsplit("_", 1)[-1]
    return path.parent.name, int(number) if number.isdigit() else -1


def _read(path: Path, what: str) -> np.ndarray:
    arr, why, _ = read_tiff(path)
    if arr is None:
        raise EvaluateError(f"{what} mask {path} cannot be read ({why}); replace or re-write it")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # an RGB(A) mask: any channel carries it
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise EvaluateError(f"{what} mask {path} has shape {arr.shape}; masks must be 2-D (H, W)")
    return arr


def _binary(arr: np.ndarray) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        return arr >= 0.5
    return arr != 0 if arr.max(initial=0) <= 1 else arr >= 128


def evaluate_dirs(pred: str | os.PathLike, truth: str | os.PathLike,
                  progress: Callable[[int, int], None] | None = None,
                  predicted_patients_only: bool = False) -> Evaluation:
    """Every DESIGN.md metric of the masks under ``pred`` against those under ``truth``.

    With ``predicted_patients_only`` the truth is limited to the patient folders that ``pred`` holds (score the
    test patients' predictions against a whole ``kaggle_3m`` tree); their every slice must still be predicted.

    Raises ``EvaluateError`` for a missing folder, a truth tree without masks, missing predictions (all of
    them are counted and the first few named), unreadable files or mismatched shapes."""
    pred, truth = Path(pred), Path(truth)
    for p, what in ((pred, "PRED"), (truth, "TRUTH")):
        if not p.is_dir():
            raise EvaluateError(f"{what} {p} is not a folder; pass a folder of <patient>/<..>_<n>_mask.tif files")
    truth_masks = find_masks(truth)
    if not truth_masks:
        raise EvaluateError(f"TRUTH {truth} holds no *_mask.tif files; pass the LGG kaggle_3m folder (or a copy)")
    pred_masks = find_masks(pred)
    if predicted_patients_only:
        folders = {p.parent.name for p in pred_masks.values()}
        truth_masks = {n: p for n, p in truth_masks.items() if p.parent.name in folders}
        if not truth_masks:
            raise EvaluateError(f"none of the patient folders in PRED {pred} is in TRUTH {truth}")
    missing = sorted((n for n in truth_masks if n not in pred_masks), key=lambda n: _slice_key(truth_masks[n]))
    if missing:
        raise EvaluateError(
            f"PRED {pred} lacks {len(missing)} of the {len(truth_masks)} masks in TRUTH {truth} (e.g. "
            f"{', '.join(missing[:3])}); write one <name>_mask.tif per truth slice (an empty mask for no tumour)"
        )
    names = sorted(truth_masks, key=lambda n: _slice_key(truth_masks[n]))
    counts = np.zeros((len(names), 3), dtype=np.int64)
    patients, pixels = [], None
    for i, name in enumerate(names):
        t, p = _read(truth_masks[name], "truth"), _read(pred_masks[name], "predicted")
        if t.shape != p.shape:
            raise EvaluateError(f"predicted mask {pred_masks[name]} is {p.shape} but its truth is {t.shape}")
        if pixels is not None and t.size != pixels:
            raise EvaluateError(f"truth mask {truth_masks[name]} is {t.shape}; every slice must have one size")
        pixels = t.size
        counts[i] = slice_counts_numpy(_binary(p)[None], (t != 0)[None])[0]
        patients.append(truth_masks[name].parent.name)
        if progress:
            progress(i + 1, len(names))
    metrics = compute_metrics(counts, patients, int(pixels))
    extra = len(set(pred_masks) - set(truth_masks))
    if extra:
        log.warning("%d prediction files in %s have no truth mask in %s: ignored", extra, pred, truth)
    return Evaluation(metrics, per_patient_dice(counts, patients), len(names), len(set(patients)), extra)
