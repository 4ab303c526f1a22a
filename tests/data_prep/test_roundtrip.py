"""Synthetic and real data through prep and back: pixel-exact, counts true, layout quirks handled."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import tifffile

from data_prep import PreparedData, PrepError, prepare
from data_prep.layout import discover
from tests.data_prep.shard_helpers import shard_content, without_bytes


def _expected(src):
    """{(patient, slice): (image, mask01)} straight from the TIFFs with tifffile."""
    out = {}
    for folder in sorted(p for p in src.rglob("TCGA_*") if p.is_dir()):
        pid = "_".join(folder.name.split("_")[:3])
        for img in folder.glob("*.tif"):
            if img.name.endswith("_mask.tif"):
                continue
            n = int(img.stem.rsplit("_", 1)[1])
            mask = tifffile.imread(img.with_name(f"{img.stem}_mask.tif"))
            out[(pid, n)] = (tifffile.imread(img), (mask // 255).astype(np.uint8))
    return out


def test_synthetic_round_trip_is_pixel_exact(synth_tree, tmp_path):
    m = prepare(synth_tree, tmp_path / "out", workers=1)
    expected = _expected(synth_tree)
    pd_ = PreparedData(tmp_path / "out")
    arr = pd_.load()
    assert len(arr) == len(expected) == m["slices"]
    assert arr.image.dtype == np.uint8 and arr.image.shape[1:] == (256, 256, 3)
    assert arr.mask.shape[1:] == (256, 256) and set(np.unique(arr.mask)) <= {0, 1}
    for i in range(len(arr)):
        img, mask = expected[(arr.patient[i], int(arr.slice[i]))]
        assert np.array_equal(arr.image[i], img)
        assert np.array_equal(arr.mask[i], mask)
    tumour = sum(1 for _, msk in expected.values() if msk.any())
    assert m["tumour_slices"] == tumour
    assert m["patients"] == 4 and m["image_shape"] == [256, 256, 3]
    # sorted by (patient, slice), split loads partition the whole
    keys = list(zip(arr.patient, arr.slice))
    assert keys == sorted(keys)
    parts = [pd_.load(s) for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(arr)
    sub = pd_.load(patients=[arr.patient[0]])
    assert set(sub.patient) == {arr.patient[0]}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == m


def test_parallel_prep_and_load_equal_serial(synth_tree, tmp_path):
    m2 = prepare(synth_tree, tmp_path / "out", workers=2)  # the process pool
    m1 = prepare(synth_tree, tmp_path / "out1", workers=1)
    # The same shards whatever the worker count: the same data (lzf's bytes may differ: data_prep/shards.py).
    assert without_bytes(m1) == without_bytes(m2)
    for s1, s2 in zip(m1["shards"], m2["shards"]):
        assert shard_content(tmp_path / "out1" / s1["file"]) == shard_content(tmp_path / "out" / s2["file"])
    pd_ = PreparedData(tmp_path / "out")
    a, b = pd_.load(workers=1), pd_.load(workers=2)
    for k in ("image", "mask", "patient", "slice"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    # lazy and picklable (Ray workers get it by value): nothing open, loads the same after a round trip
    again = pickle.loads(pickle.dumps(pd_))
    assert np.array_equal(again.load("val").image, pd_.load("val").image)
    t = a.to_torch()
    assert tuple(t["image"].shape) == a.image.shape and t["mask"].dtype.is_floating_point is False


def test_duplicate_tree_readme_dsstore_and_numeric_order(src, tmp_path):
    # a second identical tree, as public copies hold, plus stray files everywhere
    shutil.copytree(src, src.parent / "lgg-mri-segmentation" / "kaggle_3m")
    (src.parent / ".DS_Store").write_bytes(b"\0\1")
    folder = sorted(p for p in src.iterdir() if p.is_dir())[0]
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "README.md").write_text("notes")
    (src.parent / "__MACOSX" / "kaggle_3m" / folder.name).mkdir(parents=True)
    (src.parent / "__MACOSX" / "kaggle_3m" / folder.name / f"._{folder.name}_1.tif").write_bytes(b"\0")
    lay = discover(src.parent)  # the parent of kaggle_3m
    assert len(lay.patients) == 4
    assert len(lay.duplicates) == 4 and not lay.problems
    numbers = [s.n for s in lay.patients[0].slices]
    assert numbers == sorted(numbers) and numbers[:3] == [1, 2, 3]
    m = prepare(src.parent, tmp_path / "out", workers=1)
    assert m["patients"] == 4 and len(m["duplicates_skipped"]) == 4
    assert any(p.endswith("README.md") for p in m["ignored_files"])


def test_many_slices_sort_numerically(tmp_path):
    from data_prep.synth import make_synthetic

    root = make_synthetic(tmp_path / "s", patients=1, seed=5, min_slices=12, max_slices=12)
    prepare(root, tmp_path / "out", workers=1)
    arr = PreparedData(tmp_path / "out").load()
    assert arr.slice.tolist() == list(range(1, 13))  # 2 before 10, never lexical


def test_csv_join_warnings(src, tmp_path):
    lines = (src / "data.csv").read_text().splitlines()
    dropped = lines.pop(1).split(",")[0]
    lines.append("TCGA_ZZ_0001" + "," * 17)
    (src / "data.csv").write_text("\n".join(lines) + "\n")
    m = prepare(src, tmp_path / "out", workers=1)
    assert m["metadata"]["patients_without_csv_row"] == [dropped]
    assert m["metadata"]["csv_rows_without_images"] == ["TCGA_ZZ_0001"]
    assert any("no row in data.csv" in w for w in m["warnings"])
    meta = PreparedData(tmp_path / "out").metadata()
    assert dropped in set(meta["Patient"]) and not meta.isna().any().any()  # kept and imputed


def test_missing_source_and_no_patients(tmp_path):
    with pytest.raises(PrepError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepError, match="no patient folders"):
        prepare(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(PrepError, match="not a prepared data directory"):
        PreparedData(tmp_path / "empty")


def test_lgg_sample(lgg_sample, tmp_path):
    m = prepare(lgg_sample.parent, tmp_path / "out", workers=2)  # the parent: discovery at any depth
    assert (m["patients"], m["slices"], m["tumour_slices"]) == (12, 369, 106)
    pd_ = PreparedData(tmp_path / "out")
    meta = pd_.metadata()
    row = meta[meta["Patient"] == "TCGA_HT_A61B"].iloc[0]
    assert "TCGA_HT_A61B" in pd_.patients()  # kept: images are never dropped for metadata
    assert row["incomplete"] and row["n_missing"] >= 10
    assert not meta.drop(columns=["n_missing"]).isna().any().any()  # imputed
    raw = pd_.metadata(raw=True)
    assert raw[raw["Patient"] == "TCGA_HT_A61B"].isna().sum(axis=1).iloc[0] == row["n_missing"]
    assert "TCGA_HT_A61B" in m["metadata"]["imputed_patients"]
    assert m["metadata"]["columns"]["age_at_initial_pathologic"]["kind"] == "numeric"
    arr = pd_.load(patients=["TCGA_CS_4942"])
    first = tifffile.imread(lgg_sample / "TCGA_CS_4942_19970222" / "TCGA_CS_4942_19970222_1.tif")
    assert np.array_equal(arr.image[0], first) and arr.slice[0] == 1


def test_progress_reports_both_passes(synth_tree, tmp_path):
    calls = []
    prepare(synth_tree, tmp_path / "out", workers=1, progress=lambda *a: calls.append(a))
    for stage in ("validate", "write"):
        seen = [(d, t) for s, d, t in calls if s == stage]
        assert seen[0] == (0, 4) and seen[-1] == (4, 4)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert [s for s, _, _ in calls].index("write") > max(i for i, c in enumerate(calls) if c[0] == "validate")
