"""One parser of LGG slice file names (``data_prep.layout.parse_slice_name``) for prep, predict and evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.layout import SliceName, is_mask_name, parse_slice_name

STEM = "TCGA_CS_4941_19960909"


@pytest.mark.parametrize("name, parsed", [
    (f"{STEM}_12.tif", SliceName(STEM, 12, False)),
    (f"{STEM}_12_mask.tif", SliceName(STEM, 12, True)),
    (f"{STEM}_3.TIFF", SliceName(STEM, 3, False)),
    (f"{STEM}_3_MASK.Tif", SliceName(STEM, 3, True)),
    (f"{STEM}_007.tif", SliceName(STEM, 7, False)),
    ("scan_mask_2.tif", SliceName("scan_mask", 2, False)),  # the number comes last: an image of stem scan_mask
    (f"{STEM}.tif", SliceName("TCGA_CS_4941", 19960909, False)),  # prep: "named for another scan than its folder"
    ("scan.tif", None),
    (f"{STEM}_.tif", None),
    (f"{STEM}_abc_mask.tif", None),
    (f"{STEM}_1.png", None),
    ("README.md", None),
])
def test_parse_slice_name(name, parsed):
    assert parse_slice_name(name) == parsed


def test_is_mask_name_holds_unnumbered_masks_too():
    assert is_mask_name(f"{STEM}_1_mask.tif") and is_mask_name("whatever_MASK.TIFF")
    assert not is_mask_name(f"{STEM}_1.tif") and not is_mask_name("mask.tif")


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_predict_lists_images_by_number_and_skips_masks(tmp_path):
    from orchestrator.predict import find_slices

    _touch(tmp_path / STEM, f"{STEM}_10.tif", f"{STEM}_2.tif", f"{STEM}_2_mask.tif", f"{STEM}_1.TIF", "notes.txt")
    [patient] = find_slices(tmp_path)
    assert (patient.folder, patient.stem, patient.numbers) == (STEM, STEM, [1, 2, 10])
    assert [p.name for p in patient.paths] == [f"{STEM}_1.TIF", f"{STEM}_2.tif", f"{STEM}_10.tif"]


def test_evaluate_orders_masks_by_slice_number(tmp_path):
    from orchestrator.score_masks import _slice_key, find_masks

    _touch(tmp_path / STEM, f"{STEM}_10_mask.tif", f"{STEM}_2_mask.tiff", f"{STEM}_2.tif", "odd_mask.tif")
    found = find_masks(tmp_path)
    assert sorted(found) == sorted([f"{STEM}_10_mask.tif", f"{STEM}_2_mask.tiff", "odd_mask.tif"])
    keys = sorted(_slice_key(p) for p in found.values())
    assert keys == [(STEM, -1), (STEM, 2), (STEM, 10)]
