"""``orch predict MODEL INPUT OUT``: tumour masks for new slices, with LGG naming, overlays and a per-patient CSV.

MODEL is an orch checkpoint (``best.pt``/``last.pt``), a run or sweep-trial directory holding one ``best.pt``, or
an MLflow model URI (``models:/<sweep>-best@champion``: a sweep's best registered model; ``models:/<name>/<version>``,
``models:/<model id>``, ``runs:/<id>/model``), resolved against the store ``tracking_uri`` (default
``$MLFLOW_TRACKING_URI``, else ``sqlite:///<current dir>/mlflow.db``). INPUT is a folder of one patient's slices
(``..._<n>.tif``) or any tree holding such folders (an LGG ``kaggle_3m`` layout: mask files are ignored).

OUT receives, per patient folder, ``<folder>/<stem>_<n>_mask.tif`` (uint8 {0, 255}, as LGG's masks),
``overlays/<folder>/<stem>_<n>.png`` for the slices with predicted tumour, and ``patients.csv`` (one row per
patient: slices, tumour slices, tumour pixels). Files are written to temporary names and renamed into place.

INPUT is resolved first (``tree/sub/..`` is ``tree``) and walked by :func:`orchestrator.files.walk_tree`:
symlinked folders are followed, each real folder once; a link that loops back or leads to folders already read
is skipped with a warning naming it. Slice file names are read by :func:`data_prep.layout.parse_slice_name`, as
``orch prep`` reads them. Every output folder is checked to lie inside OUT before anything is written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from data_prep.layout import parse_slice_name
from data_prep.tiffs import check_image, read_tiff
from orchestrator.errors import UnsafePathError, UserError
from orchestrator.files import atomic_write, inside, walk_tree
from orchestrator.postprocess import remove_small_components, scaled_min_voxels

log = logging.getLogger(__name__)

_MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:", "s3://", "gs://")


class PredictError(UserError, ValueError):
    """Bad MODEL or INPUT: the message names it, says what is wrong and what to do."""


@dataclass(frozen=True)
class PatientSlices:
    folder: str  # output folder name (the input folder's name)
    stem: str  # file stem before ``_<n>``
    numbers: list[int]
    paths: list[Path]


def find_slices(root: str | os.PathLike, patients: tuple[str, ...] = ()) -> list[PatientSlices]:
    """Every folder under ``root`` (itself included) holding ``<stem>_<n>.tif`` images; masks are skipped.

    ``patients`` keeps only folders whose name starts with one of these ids (``TCGA_DU_5853``). Slices are sorted
    numerically (``_2`` before ``_10``). ``root`` is resolved before any name is derived from it (``sub/..`` would
    otherwise name a folder ``..``); two folders of one name get their path below ``root`` joined by ``_``."""
    given = Path(root)
    if not given.is_dir():
        raise PredictError(f"INPUT {given} is not a folder: pass a patient folder of ..._<n>.tif slices or a tree "
                           "of them")
    root = given.resolve()
    found: dict[Path, list[tuple[int, str, Path]]] = {}
    for folder, filenames in walk_tree(root):
        if patients and not folder.name.startswith(patients):
            continue
        for name in filenames:
            parsed = parse_slice_name(name)
            if parsed and not parsed.mask:
                found.setdefault(folder, []).append((parsed.n, parsed.stem, folder / name))
    if not found:
        which = f" of patient(s) {', '.join(patients)}" if patients else ""
        raise PredictError(f"INPUT {given} holds no slice images{which} named <stem>_<n>.tif; "
                           "point it at an LGG patient folder or a kaggle_3m tree")
    out: list[PatientSlices] = []
    taken: set[str] = set()
    for folder, items in sorted(found.items()):
        items.sort()
        name = folder.name
        if name in taken:
            name = "_".join(folder.relative_to(root).parts)
        base, k = name, 2
        while name in taken:  # ``a/X`` beside a real folder ``a_X``: never two patients in one output folder
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        out.append(PatientSlices(name, items[0][1], [n for n, _, _ in items], [p for _, _, p in items]))
    return out


def output_dir(out: Path, *parts: str) -> Path:
    """The real path of ``out/parts...``, checked to lie inside OUT (``PredictError`` naming it otherwise).

    The folder is resolved, not the file: a mask is written to a temporary name in its folder and renamed onto
    its final name, which replaces a symlink there rather than writing through it. File names come from
    directory listings and so hold no separator."""
    path = out.joinpath(*parts)
    try:
        return inside(path, out)
    except UnsafePathError:
        raise PredictError(f"output folder {path} would lie outside OUT {out} (it resolves to {path.resolve()}): "
                           "remove the symlink or the '..' that leads out of OUT, or choose another OUT") from None


@dataclass
class ResolvedModel:
    """A model to predict with and how it was evaluated in training (its TrainConfig's ``image_size``, ``tta``
    and ``min_component``; an MLflow model URI carries the image size only)."""

    model: torch.nn.Module
    image_size: int | None
    described: str
    tta: bool = False
    min_component: int = 0


def resolve_model(spec: str, tracking_uri: str | None = None) -> ResolvedModel:
    """The model in eval mode and its evaluation settings for MODEL (a checkpoint, a run directory, a URI resolved
    against ``tracking_uri``)."""
    from orchestrator.training import load_checkpoint

    if spec.startswith(_MLFLOW_SCHEMES):
        from orchestrator.tracking import load_logged_model

        model, image_size = load_logged_model(spec, tracking_uri)
        return ResolvedModel(model, image_size, spec)
    p = Path(spec)
    if p.is_dir():
        found = sorted(p.rglob("best.pt"))
        if len(found) != 1:
            what = "no best.pt" if not found else f"{len(found)} best.pt files ({', '.join(map(str, found[:4]))})"
            raise PredictError(f"MODEL {p} holds {what}; pass one checkpoint file or a single trial's directory")
        p = found[0]
    if not p.exists():
        raise PredictError(f"MODEL {spec} is neither a checkpoint file, a run directory nor an MLflow model URI "
                           "(models:/<sweep>-best@champion, models:/NAME/VERSION, runs:/RUN_ID/model)")
    try:
        model, cfg, _ = load_checkpoint(p)
    except ValueError as e:
        raise PredictError(str(e)) from e
    return ResolvedModel(model, cfg.image_size, str(p), tta=cfg.tta, min_component=cfg.min_component)


def _read_images(patient: PatientSlices) -> np.ndarray:
    images, problems = [], []
    for path in patient.paths:
        arr, why, _ = read_tiff(path)
        why = why or check_image(arr)
        if why:
            problems.append(f"{path}: {why}")
        else:
            images.append(arr)
    if problems:
        raise PredictError("cannot predict on these slices (fix or remove them, then rerun):\n  "
                           + "\n  ".join(problems))
    return np.stack(images)  # (N, 256, 256, 3) uint8


def _overlay(image: np.ndarray, mask: np.ndarray) -> Image.Image:
    """FLAIR slice (channel 1) in grey with the predicted tumour tinted red: (H, W, 3) uint8 RGB."""
    grey = np.repeat(image[..., 1:2], 3, axis=2).astype(np.float32)
    red = np.array([255.0, 0.0, 0.0], dtype=np.float32)
    out = np.where(mask[..., None] > 0, 0.55 * grey + 0.45 * red, grey)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def predict_tree(model_spec: str, input_dir: str | os.PathLike, out_dir: str | os.PathLike, device: str = "auto",
                 batch_size: int = 32, threshold: float = 0.5, overlays: bool = True, patients: tuple[str, ...] = (),
                 progress=None, tracking_uri: str | None = None) -> list[dict]:
    """Predict every slice under ``input_dir`` into ``out_dir``; returns the per-patient rows of ``patients.csv``.
    ``tracking_uri``: the MLflow store an MLflow MODEL URI is resolved against (``resolve_model``).

    ``progress(done, total)`` is called after each patient (the CLI draws a bar with it)."""
    from orchestrator.training import predict_masks
    from orchestrator.training.outcome import write_csv

    out = Path(out_dir)
    found = find_slices(input_dir, patients)  # validate INPUT and OUT before loading a model or writing anything
    dirs = [(output_dir(out, p.folder), output_dir(out, "overlays", p.folder)) for p in found]
    resolved = resolve_model(model_spec, tracking_uri)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    amp = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
    log.info("predicting %d patient folders with %s on %s", len(found), resolved.described, dev)
    rows = []
    for i, (patient, (mask_dir, overlay_dir)) in enumerate(zip(found, dirs)):
        images = _read_images(patient)
        prob = predict_masks(resolved.model, images, dev, image_size=resolved.image_size, batch_size=batch_size,
                             amp_dtype=amp, tta=resolved.tta)
        masks = prob >= threshold  # (N, H, W): one patient's volume, post-processed as in training
        masks = remove_small_components(masks, scaled_min_voxels(resolved.min_component, masks.shape[-1]))
        masks = masks.astype(np.uint8)
        for n, image, mask in zip(patient.numbers, images, masks):
            name = f"{patient.stem}_{n}"
            atomic_write(mask_dir / f"{name}_mask.tif",
                          lambda t, m=mask: tifffile.imwrite(t, m * np.uint8(255), photometric="minisblack"))
            if overlays and mask.any():
                atomic_write(overlay_dir / f"{name}.png",
                              lambda t, im=image, m=mask: _overlay(im, m).save(t, format="PNG"))
        rows.append({"patient": patient.folder, "slices": len(masks),
                     "tumour_slices": int(masks.any(axis=(1, 2)).sum()), "tumour_pixels": int(masks.sum())})
        if progress:
            progress(i + 1, len(found))
    write_csv(out / "patients.csv", rows)
    return rows


def describe(rows: list[dict], out: str | os.PathLike) -> str:
    """The line ``orch predict`` ends with: what :func:`predict_tree` wrote (its ``rows``) and where."""
    slices = sum(r["slices"] for r in rows)
    tumour = sum(r["tumour_slices"] for r in rows)
    return (f"predicted {slices} slices of {len(rows)} patients ({tumour} with tumour) into {out}; "
            f"per-patient table: {Path(out) / 'patients.csv'}")
