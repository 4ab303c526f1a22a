"""Every bad-input category: a clear problem (file, what, what to do), non-zero exit, nothing written;
``skip_invalid`` excludes and records instead."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from data_prep import PreparedData, ValidationFailed, prepare


def _folder(src: Path, k: int = 0) -> Path:
    return sorted(d for d in src.iterdir() if d.is_dir())[k]


def _files(src: Path, k: int = 0, n: int = 2) -> tuple[Path, Path]:
    f = _folder(src, k)
    return f / f"{f.name}_{n}.tif", f / f"{f.name}_{n}_mask.tif"


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _csv_edit(src: Path, fn) -> None:
    lines = (src / "data.csv").read_text().splitlines()
    (src / "data.csv").write_text("\n".join(fn(lines)) + "\n")


def _set_field(lines: list[str], row: int, col: int, value: str) -> list[str]:
    cells = lines[row].split(",")
    cells[col] = value
    lines[row] = ",".join(cells)
    return lines


# (id, how to break the tree -> the path the problem must name, text the problem must contain)
CASES = {
    "image_truncated": (lambda s: (_truncate(_files(s)[0]), _files(s)[0])[1], "truncated"),
    "image_not_tiff": (lambda s: (_files(s)[0].write_bytes(b"not a tiff at all" * 20), _files(s)[0])[1],
                       "not a readable TIFF"),
    "image_16bit": (lambda s: (tifffile.imwrite(_files(s)[0], np.full((256, 256, 3), 300, np.uint16)),
                               _files(s)[0])[1], "16-bit"),
    "image_float": (lambda s: (tifffile.imwrite(_files(s)[0], np.zeros((256, 256, 3), np.float32)),
                               _files(s)[0])[1], "float32"),
    "image_size": (lambda s: (tifffile.imwrite(_files(s)[0], np.zeros((240, 240, 3), np.uint8)),
                              _files(s)[0])[1], "image shape is (240, 240, 3)"),
    "image_gray": (lambda s: (tifffile.imwrite(_files(s)[0], np.zeros((256, 256), np.uint8)),
                              _files(s)[0])[1], "image shape is (256, 256)"),
    "mask_missing": (lambda s: (_files(s)[1].unlink(), _files(s)[0])[1], "mask file missing"),
    "mask_orphan": (lambda s: (_files(s)[0].unlink(), _files(s)[1])[1], "mask without its image"),
    "mask_values": (lambda s: (tifffile.imwrite(_files(s)[1], np.full((256, 256), 128, np.uint8)),
                               _files(s)[1])[1], "mask values are {128}"),
    "mask_rgb": (lambda s: (tifffile.imwrite(_files(s)[1], np.zeros((256, 256, 3), np.uint8)),
                            _files(s)[1])[1], "single channel"),
    "mask_16bit": (lambda s: (tifffile.imwrite(_files(s)[1], np.zeros((256, 256), np.uint16)),
                              _files(s)[1])[1], "16-bit"),
    "mask_size": (lambda s: (tifffile.imwrite(_files(s)[1], np.zeros((128, 128), np.uint8)),
                             _files(s)[1])[1], "mask size (128, 128) differs from its image's (256, 256)"),
    "mask_truncated": (lambda s: (_truncate(_files(s)[1]), _files(s)[1])[1], "truncated"),
    "misnamed_slice": (lambda s: (shutil.copy(_files(s, 1)[0], _folder(s) / _files(s, 1)[0].name),
                                  _folder(s) / _files(s, 1)[0].name)[1], "named for another scan"),
    "csv_duplicate_patient": (lambda s: (_csv_edit(s, lambda ls: ls + [ls[1]]), s / "data.csv")[1],
                              "duplicate Patient id"),
    "csv_not_integer": (lambda s: (_csv_edit(s, lambda ls: _set_field(ls, 1, 2, "2.5")), s / "data.csv")[1],
                        "not an integer code"),
    "csv_not_number": (lambda s: (_csv_edit(s, lambda ls: _set_field(ls, 2, 14, "old")), s / "data.csv")[1],
                       "not a number"),
    "csv_missing": (lambda s: ((s / "data.csv").unlink(), s / "data.csv")[1], "no data.csv"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_reported_and_nothing_written(src, tmp_path, case):
    breaker, text = CASES[case]
    bad_path = breaker(src)
    out = tmp_path / "out"
    with pytest.raises(ValidationFailed) as err:
        prepare(src, out, workers=1)
    msg = str(err.value)
    assert text in msg
    assert str(bad_path) in msg
    assert "->" in msg and "--skip-invalid" in msg  # what to do is said
    assert not out.exists()  # nothing half-written: no manifest, no shard, not even the folder


def test_differing_second_copy_is_a_problem(src, tmp_path):
    other = src.parent / "lgg-mri-segmentation" / "kaggle_3m"
    folder = _folder(src)
    shutil.copytree(folder, other / folder.name)
    next(iter(sorted((other / folder.name).glob("*_1_mask.tif")))).unlink()
    with pytest.raises(ValidationFailed) as err:
        prepare(src.parent, tmp_path / "out", workers=1)
    assert "second, different folder" in str(err.value)


def test_all_problems_are_collected_together(src, tmp_path):
    _truncate(_files(src, 0)[0])
    _files(src, 1, 3)[1].unlink()
    _csv_edit(src, lambda ls: ls + [ls[1]])
    with pytest.raises(ValidationFailed) as err:
        prepare(src, tmp_path / "out", workers=1)
    assert len(err.value.problems) == 3
    assert {p.scope for p in err.value.problems} == {"slice", "csv"}


def test_existing_prepared_dir_is_untouched_by_a_failed_run(src, tmp_path):
    out = tmp_path / "out"
    prepare(src, out, workers=1)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _truncate(_files(src)[0])
    with pytest.raises(ValidationFailed):
        prepare(src, out, workers=1)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_skip_invalid_excludes_and_records(src, tmp_path):
    full = prepare(src, tmp_path / "full", workers=1)
    img, _ = _files(src, 0, 2)
    _, msk = _files(src, 1, 3)
    _truncate(img)
    tifffile.imwrite(msk, np.full((256, 256), 7, np.uint8))
    _csv_edit(src, lambda ls: ls + [ls[1]])
    m = prepare(src, tmp_path / "out", workers=1, skip_invalid=True)
    assert m["slices"] == full["slices"] - 2
    assert m["patients"] == full["patients"]
    reasons = {e["path"]: e["reason"] for e in m["excluded"]}
    assert "truncated" in reasons[str(img)]
    assert "mask values" in reasons[str(msk)]
    assert "duplicate Patient id" in reasons[str(src / "data.csv")]
    arr = PreparedData(tmp_path / "out").load()
    p0 = _folder(src, 0).name.rsplit("_", 1)[0]
    assert 2 not in set(arr.slice[arr.patient == p0])
    assert 1 in set(arr.slice[arr.patient == p0])


def test_skip_invalid_drops_a_patient_left_without_slices(src, tmp_path):
    folder = _folder(src, 2)
    for mask in folder.glob("*_mask.tif"):
        mask.write_bytes(b"garbage")
    m = prepare(src, tmp_path / "out", workers=1, skip_invalid=True)
    pid = folder.name.rsplit("_", 1)[0]
    assert m["patients"] == 3
    assert pid not in PreparedData(tmp_path / "out").patients()
    assert all(pid not in m["split"][s] for s in ("train", "val", "test"))
