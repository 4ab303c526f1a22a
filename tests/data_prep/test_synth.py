"""Synthetic data: the exact LGG layout and formats, deterministic by seed, learnable tumour on a run of slices."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import tifffile

from data_prep.layout import CSV_COLUMNS, PATIENT_DIR_RE
from data_prep.synth import make_synthetic


def _tree_hash(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_formats(synth_tree):
    folders = sorted(p for p in synth_tree.iterdir() if p.is_dir())
    assert len(folders) == 4 and all(PATIENT_DIR_RE.match(f.name) for f in folders)
    with open(synth_tree / "data.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == CSV_COLUMNS
    assert {r[0] for r in rows[1:]} == {"_".join(f.name.split("_")[:3]) for f in folders}
    cells = [c for r in rows[1:] for c in r[1:]]
    assert "" in cells  # realistic empty fields
    assert all(c == "" or c.isdigit() for c in cells)  # integer codes (age too, as in the real table)
    assert sum(c == "" for c in rows[-1]) >= 15  # one patient with (almost) everything empty
    for folder in folders:
        n = len(list(folder.glob("*_mask.tif")))
        for s in range(1, n + 1):
            img = tifffile.imread(folder / f"{folder.name}_{s}.tif")
            msk = tifffile.imread(folder / f"{folder.name}_{s}_mask.tif")
            assert img.shape == (256, 256, 3) and img.dtype == np.uint8
            assert msk.shape == (256, 256) and msk.dtype == np.uint8 and set(np.unique(msk)) <= {0, 255}


def test_tumour_is_a_contiguous_bright_run(synth_tree):
    for folder in sorted(p for p in synth_tree.iterdir() if p.is_dir()):
        n = len(list(folder.glob("*_mask.tif")))
        has = []
        for s in range(1, n + 1):
            msk = tifffile.imread(folder / f"{folder.name}_{s}_mask.tif") > 0
            has.append(msk.any())
            if msk.any():
                flair = tifffile.imread(folder / f"{folder.name}_{s}.tif")[..., 1].astype(float)
                # learnable: the tumour is clearly brighter in FLAIR than the brain around it
                assert flair[msk].mean() > flair[~msk & (flair > 20)].mean() + 30
        idx = np.flatnonzero(has)
        assert len(idx) >= 3 and np.all(np.diff(idx) == 1)  # one contiguous run
        assert not has[0] and not has[-1]  # not at the volume's ends


def test_deterministic_by_seed(tmp_path):
    a = make_synthetic(tmp_path / "a", patients=2, seed=9, min_slices=4, max_slices=5)
    b = make_synthetic(tmp_path / "b", patients=2, seed=9, min_slices=4, max_slices=5, workers=2)
    c = make_synthetic(tmp_path / "c", patients=2, seed=10, min_slices=4, max_slices=5)
    assert _tree_hash(a) == _tree_hash(b) != _tree_hash(c)
