"""Synthetic LGG-layout datasets: the exact folder/file names, TIFF formats and data.csv of the real dataset,
with brain-like phantoms a network can learn from. Deterministic by seed.

Layout written (as ``kaggle_3m`` in the public copies)::

    OUT/kaggle_3m/data.csv
    OUT/kaggle_3m/README.md
    OUT/kaggle_3m/TCGA_<INST>_<ID>_<YYYYMMDD>/TCGA_<INST>_<ID>_<YYYYMMDD>_<n>.tif       (256,256,3) uint8 RGB
    OUT/kaggle_3m/TCGA_<INST>_<ID>_<YYYYMMDD>/TCGA_<INST>_<ID>_<YYYYMMDD>_<n>_mask.tif  (256,256) uint8 {0,255}
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import logging
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import tifffile

from data_prep.layout import CSV_COLUMNS

# fork where available (see data_prep.passes.mp_context): spawn would re-run an unguarded caller script.
_START = "fork" if "fork" in mp.get_all_start_methods() else "spawn"

log = logging.getLogger(__name__)

SIZE = 256
# Institutions of the real dataset, with roughly its proportions (HT and DU are the largest sources).
_INSTITUTIONS = ("CS", "DU", "DU", "EZ", "FG", "HT", "HT", "HT", "CS", "DU", "FG", "HT")
# Code ranges per data.csv column (inclusive), as in the real table; age is numeric.
_CODE_RANGES = {
    "RNASeqCluster": (1, 4), "MethylationCluster": (1, 5), "miRNACluster": (1, 4), "CNCluster": (1, 3),
    "RPPACluster": (1, 4), "OncosignCluster": (1, 3), "COCCluster": (1, 3), "histological_type": (1, 3),
    "neoplasm_histologic_grade": (1, 2), "tumor_tissue_site": (1, 1), "laterality": (1, 3),
    "tumor_location": (1, 6), "gender": (1, 2), "race": (1, 3), "ethnicity": (1, 2), "death01": (0, 1),
}


def make_synthetic(out: str | os.PathLike, patients: int = 6, seed: int = 0, min_slices: int = 20,
                   max_slices: int = 52, workers: int = 1) -> Path:
    """Write a synthetic LGG tree under ``out/kaggle_3m`` and return that folder.

    Each patient gets ``min_slices..max_slices`` slices (the real range is 20-88; the default mean ~36 matches
    the real 3,929 slices / 110 patients), a brain ellipse that grows and shrinks across slices, and a bright
    tumour blob (strongest in the FLAIR channel) on one contiguous run of about a third of the slices.
    ``workers`` processes write patients in parallel; the files do not depend on it.
    """
    if patients < 1:
        raise ValueError(f"patients={patients}: need at least 1")
    root = Path(out) / "kaggle_3m"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = _patient_ids(rng, patients)
    rows, jobs = [], []
    for pid, folder in ids:
        n = int(rng.integers(min_slices, max_slices + 1))
        jobs.append((root / folder, folder, n, int(rng.integers(2**63))))  # seeds drawn in order: deterministic
        rows.append(_csv_row(rng, pid))
    if workers > 1 and len(jobs) > 1:
        with cf.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context(_START)) as pool:
            list(pool.map(_write_patient, *zip(*jobs)))
    else:
        for job in jobs:
            _write_patient(*job)
    # One patient with (almost) every field empty, like TCGA_HT_A61B in the real table.
    if patients >= 3:
        rows[-1] = {"Patient": rows[-1]["Patient"], "MethylationCluster": rows[-1].get("MethylationCluster", "")}
    with open(root / "data.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, restval="")
        w.writeheader()
        w.writerows(rows)
    (root / "README.md").write_text(f"Synthetic LGG-layout dataset: {patients} patients, seed {seed}.\n")
    log.info("wrote %d synthetic patients under %s", patients, root)
    return root


def _patient_ids(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    seen: set[str] = set()
    out = []
    while len(out) < n:
        inst = _INSTITUTIONS[len(out) % len(_INSTITUTIONS)]
        num = int(rng.integers(4000, 9000))
        # Some real IDs hold letters (A61B): keep one in every ~15.
        pid_tail = f"A{num % 100:02d}B" if rng.random() < 0.07 else str(num)
        pid = f"TCGA_{inst}_{pid_tail}"
        if pid in seen:
            continue
        seen.add(pid)
        date = f"{int(rng.integers(1995, 2004))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        out.append((pid, f"{pid}_{date}"))
    return out


def _csv_row(rng: np.random.Generator, pid: str) -> dict:
    row: dict = {"Patient": pid}
    for col, (lo, hi) in _CODE_RANGES.items():
        if rng.random() >= 0.08:  # ~8% empty fields, like the real table
            row[col] = int(rng.integers(lo, hi + 1))
    if rng.random() >= 0.02:
        row["age_at_initial_pathologic"] = int(rng.integers(20, 76))
    return row


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Low-frequency texture in [-1, 1]: coarse noise upsampled by nearest repeat then box-blurred."""
    coarse = rng.standard_normal((shape[0] // cell + 1, shape[1] // cell + 1))
    up = np.repeat(np.repeat(coarse, cell, 0), cell, 1)[: shape[0], : shape[1]]
    k = np.ones(cell) / cell
    up = np.apply_along_axis(np.convolve, 0, up, k, "same")
    up = np.apply_along_axis(np.convolve, 1, up, k, "same")
    return np.clip(up / 0.6, -1, 1)


def _write_patient(folder: Path, name: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cy, cx = SIZE / 2 + rng.normal(0, 6), SIZE / 2 + rng.normal(0, 6)
    ry, rx = rng.uniform(85, 105), rng.uniform(70, 88)
    # Per-channel tissue brightness: pre-contrast, FLAIR, post-contrast.
    tissue = np.array([rng.uniform(60, 90), rng.uniform(70, 100), rng.uniform(55, 85)], np.float32)
    texture = _smooth_noise(rng, (SIZE, SIZE), 16).astype(np.float32)
    # Tumour: a contiguous run of ~1/3 of the slices, centred inside the brain, radius peaking mid-run.
    run = max(3, int(round(n * rng.uniform(0.25, 0.45))))
    lo = max(2, n // 5)  # at least one tumour-free slice at each end of the volume, as in the real scans
    start = int(rng.integers(lo, max(lo, n - run - max(1, n // 6) + 1) + 1))
    ty, tx = cy + rng.uniform(-35, 35), cx + rng.uniform(-30, 30)
    # Peak radius: the mean tumour area of a tumour slice then matches the real data's (~3 % of the slice).
    t_r = rng.uniform(20, 42)
    for s in range(1, n + 1):
        # Brain cross-section shrinks towards both ends of the volume.
        scale = 0.35 + 0.65 * np.sin(np.pi * s / (n + 1)) ** 0.5
        d = ((yy - cy) / (ry * scale)) ** 2 + ((xx - cx) / (rx * scale)) ** 2
        brain = d < 1.0
        img = np.zeros((SIZE, SIZE, 3), np.float32)
        shade = (1.0 - 0.35 * d) * (1.0 + 0.25 * np.roll(texture, s * 3, axis=0))
        for c in range(3):
            img[..., c] = np.where(brain, tissue[c] * shade, 0)
        # Bright skull rim, as in the real FLAIR slices.
        rim = (d >= 1.0) & (d < 1.12)
        img[rim] += np.array([110, 70, 120], np.float32)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if start <= s < start + run:
            frac = (s - start + 0.5) / run
            r = t_r * (0.45 + 0.55 * np.sin(np.pi * frac))
            blob = ((yy - ty) ** 2 + ((xx - tx) * 1.2) ** 2 < r * r) & brain
            mask[blob] = 255
            img[blob] += np.array([25, 95, 40], np.float32) * (1 + 0.1 * texture[blob])[:, None]
        # Scanner noise everywhere: the real background is mostly low non-zero values, not pure black.
        img += rng.normal(0, 2.5, img.shape).astype(np.float32)
        img = np.clip(img, 0, 255).astype(np.uint8)
        tifffile.imwrite(folder / f"{name}_{s}.tif", img, photometric="rgb")
        tifffile.imwrite(folder / f"{name}_{s}_mask.tif", mask, photometric="minisblack")
