"""``orch evaluate PRED TRUTH``: score predicted masks laid out like LGG against a truth tree.

Both trees hold ``<patient folder>/<folder>_<n>_mask.tif``; slices are matched by file name (so PRED may be a
flat folder or a tree), grouped into patients by the truth file's folder. Predicted and truth masks alike must be
integer or boolean with values {0, 255} or {0, 1}, as LGG's masks and ``orch predict``'s are (a nonzero pixel is
tumour); float data (probabilities, NaN) or other values are an error naming the file, never guessed at.
The metrics are ``orchestrator.metrics``: the same code as training.

Both trees are walked with :func:`orchestrator.files.walk_tree`: symlinked folders are followed, each real folder
once. File names are read by :func:`data_prep.layout.parse_slice_name`, the parser ``orch prep`` uses.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.layout import MASK_SUFFIXES, is_mask_name, parse_slice_name
from data_prep.tiffs import read_tiff
from orchestrator.errors import UserError
from orchestrator.files import atomic_write_text, walk_tree
from orchestrator.metrics import compute_metrics, per_patient_dice, slice_counts_numpy

log = logging.getLogger(__name__)
__all__ = ["MASK_SUFFIXES", "EvaluateError", "Evaluation", "evaluate", "evaluate_dirs", "find_masks", "walk_tree",
           "write_evaluation"]


class EvaluateError(UserError, ValueError):
    """Bad PRED or TRUTH: the message names the path, what is wrong and what to do."""


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_patient: list[dict]
    slices: int
    patients: int
    extra_predictions: int  # prediction files with no truth mask (ignored)


def find_masks(root: str | os.PathLike) -> dict[str, Path]:
    """``{file name: path}`` of every ``*_mask.tif`` under ``root`` (walked by ``walk_tree``). A name seen
    twice (LGG copies often hold a second identical ``kaggle_3m`` tree) is kept once: the first in walk order."""
    found: dict[str, Path] = {}
    for folder, filenames in walk_tree(Path(root)):
        for name in filenames:
            if is_mask_name(name) and name not in found:
                found[name] = folder / name
    return found


def _slice_key(path: Path) -> tuple[str, int]:
    """(patient folder, slice number) of ``.../<folder>/<folder>_<n>_mask.tif``: numeric, not lexical, order
    (-1 for a mask name without a slice number)."""
    parsed = parse_slice_name(path.name)
    return path.parent.name, parsed.n if parsed else -1


_EXPECTED = "masks must be integer or boolean with values 0/255 (or 0/1), like LGG's and orch predict's"


def _read(path: Path, what: str) -> np.ndarray:
    """The (H, W) bool mask in ``path``; ``EvaluateError`` naming the file for anything but a 0/255 or 0/1 mask."""
    arr, why, _ = read_tiff(path)
    if arr is None:
        raise EvaluateError(f"{what} mask {path} cannot be read ({why}); replace or re-write it")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # an RGB(A) mask: any channel carries it
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise EvaluateError(f"{what} mask {path} has shape {arr.shape}; masks must be 2-D (H, W)")
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        # float data is a probability map at best (and all-NaN reads as "no tumour" if compared): never guessed at
        nans = int(np.isnan(arr).sum()) if np.issubdtype(arr.dtype, np.floating) else 0
        nan = f", {nans} of {arr.size} pixels NaN" if nans else ""
        raise EvaluateError(f"{what} mask {path} holds {arr.dtype} data{nan}; {_EXPECTED}: threshold it and "
                            "write it as uint8 0/255")
    values = np.unique(arr)  # sorted; one (H, W) slice, cheap
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):  # as data_prep.tiffs.check_mask
        shown = ", ".join(str(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")
        raise EvaluateError(f"{what} mask {path} has values {{{shown}}}; {_EXPECTED}: re-write it with 0 for "
                            "background and 255 for tumour")
    return arr != 0


def evaluate_dirs(pred: str | os.PathLike, truth: str | os.PathLike,
                  progress: Callable[[int, int], None] | None = None,
                  predicted_patients_only: bool = False) -> Evaluation:
    """Every metric of ``docs/design.md`` for the masks under ``pred`` against those under ``truth``.

    With ``predicted_patients_only`` the truth is limited to the patient folders that ``pred`` holds (score the
    test patients' predictions against a whole ``kaggle_3m`` tree); their every slice must still be predicted.

    Raises ``EvaluateError`` for a missing folder, a truth tree without masks, missing predictions (all of
    them are counted and the first few named), unreadable files, masks that are not integer/boolean 0/255 or 0/1
    (float, NaN, stray values) or mismatched shapes."""
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
        counts[i] = slice_counts_numpy(p[None], t[None])[0]
        patients.append(truth_masks[name].parent.name)
        if progress:
            progress(i + 1, len(names))
    metrics = compute_metrics(counts, patients, int(pixels))
    extra = len(set(pred_masks) - set(truth_masks))
    if extra:
        log.warning("%d prediction files in %s have no truth mask in %s: ignored", extra, pred, truth)
    return Evaluation(metrics, per_patient_dice(counts, patients), len(names), len(set(patients)), extra)


def write_evaluation(ev: Evaluation, json_out: str | os.PathLike | None = None,
                     per_patient: str | os.PathLike | None = None) -> None:
    """``orch evaluate``'s optional files: ``json_out`` (metrics, slice and patient counts, per-patient Dice as
    JSON) and ``per_patient`` (per-patient Dice as CSV)."""
    if json_out:
        atomic_write_text(json_out, json.dumps({"metrics": ev.metrics, "slices": ev.slices, "patients": ev.patients,
                                                "per_patient": ev.per_patient}, indent=2))
    if per_patient:
        from orchestrator.training.outcome import write_csv  # the training package loads torch

        write_csv(Path(per_patient), ev.per_patient)


def evaluate(pred: str | os.PathLike, truth: str | os.PathLike, json_out: str | os.PathLike | None = None,
             per_patient: str | os.PathLike | None = None, predicted_patients_only: bool = False,
             progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """``orch evaluate``: :func:`evaluate_dirs`, then the files :func:`write_evaluation` writes."""
    ev = evaluate_dirs(pred, truth, progress=progress, predicted_patients_only=predicted_patients_only)
    write_evaluation(ev, json_out, per_patient)
    return ev
