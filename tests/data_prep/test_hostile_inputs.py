"""Hostile sources and manifests (issue 10): symlink loops, file names without a slice number, data.csv rows
with the wrong field count, edited manifests. Each is one clear problem naming the file (and line or field), never
a traceback, a misleading message, shifted metadata or a read outside the prepared directory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from data_prep import PreparedData, PrepError, ValidationFailed, prepare
from orchestrator.cli import main


def _folder(src: Path, k: int = 0) -> Path:
    return sorted(d for d in src.iterdir() if d.is_dir())[k]


def _link(link: Path, target: str) -> Path:
    os.symlink(target, link)
    return link


def _mkdir(d: Path) -> Path:
    d.mkdir()
    return d


def _copy_slice_as(src: Path, name: str) -> Path:
    f = _folder(src)
    dst = f / name.format(scan=f.name)
    shutil.copy(f / f"{f.name}_1.tif", dst)
    return dst


def _csv_lines(src: Path) -> list[str]:
    return (src / "data.csv").read_text().splitlines()


def _csv_write(src: Path, lines: list[str]) -> Path:
    (src / "data.csv").write_text("\n".join(lines) + "\n")
    return src / "data.csv"


def _extra_field(src: Path, row: int) -> Path:
    lines = _csv_lines(src)
    lines[row] += ",9"
    return _csv_write(src, lines)


def _short_row(src: Path, row: int) -> Path:
    lines = _csv_lines(src)
    lines[row] = lines[row].rsplit(",", 1)[0]
    return _csv_write(src, lines)


# (id, how to break the tree -> the path the problem must name, texts the problem list must contain)
SOURCES = {
    # 3. symlink loops and dead links: a listed problem, never an OSError traceback
    "loop_in_patient_folder": (lambda s: _link(_folder(s) / "loop", "loop"), ["symlink that loops"]),
    "loop_named_as_a_slice": (lambda s: _link(_folder(s) / f"{_folder(s).name}_99.tif", f"{_folder(s).name}_99.tif"),
                              ["symlink that loops"]),
    "dead_link_named_as_a_slice": (lambda s: _link(_folder(s) / f"{_folder(s).name}_98.tif", "/nonexistent/x.tif"),
                                   ["symlink whose target cannot be reached"]),
    "loop_in_source": (lambda s: _link(s / "loop", "loop"), ["symlink that loops"]),
    "loop_named_as_a_patient": (lambda s: _link(s / "TCGA_ZZ_0001_20000101", "TCGA_ZZ_0001_20000101"),
                                ["symlink that loops"]),
    "loop_named_data_csv": (lambda s: _link(_mkdir(s / "copy") / "data.csv", "data.csv"), ["symlink that loops"]),
    # 7. a slice file without its number: say so, and what the name must be
    "name_trailing_underscore": (lambda s: _copy_slice_as(s, "{scan}_.tif"),
                                 ["no slice number", "_<n>.tif", "_<n>_mask.tif"]),
    "name_word_not_number": (lambda s: _copy_slice_as(s, "{scan}_abc.tif"), ["no slice number", "_<n>.tif"]),
    "name_no_suffix": (lambda s: _copy_slice_as(s, "{scan}.tif"), ["no slice number", "_<n>.tif"]),
    "name_mask_no_number": (lambda s: _copy_slice_as(s, "{scan}_mask.tif"), ["no slice number", "_<n>_mask.tif"]),
    "name_other_prefix": (lambda s: _copy_slice_as(s, "scan_3.tif"), ["does not start with its folder's name"]),
    # 5. a row whose field count differs from the header: one problem naming the line, patient and counts
    "csv_extra_field_first_row": (lambda s: _extra_field(s, 1), ["line 2 (", "19 fields, but the header has 18"]),
    "csv_extra_field_later_row": (lambda s: _extra_field(s, 3), ["line 4 (", "19 fields, but the header has 18"]),
    "csv_short_row": (lambda s: _short_row(s, 2), ["line 3 (", "17 fields, but the header has 18"]),
}


@pytest.mark.parametrize("case", sorted(SOURCES))
def test_hostile_source_is_one_listed_problem(src, tmp_path, case):
    breaker, texts = SOURCES[case]
    bad_path = breaker(src)
    out = tmp_path / "out"
    with pytest.raises(ValidationFailed) as err:
        prepare(src, out, workers=1)
    msg = str(err.value)
    for text in texts:
        assert text in msg
    assert str(bad_path) in msg
    named = [p for p in err.value.problems if p.path == str(bad_path)]
    assert named and all("named for another scan" not in p.problem for p in named)
    if case.startswith("csv_"):
        assert len(err.value.problems) == 1, msg  # the real cause, not one problem per shifted field
    assert not out.exists()


def test_skip_invalid_drops_only_the_bad_csv_row(src, tmp_path):
    """An extra field on the first data row, and another on a later row: those two patients lose their row (and
    are imputed); every other patient keeps its own values, unshifted."""
    lines = _csv_lines(src)
    header = lines[0].split(",")
    expected = {ln.split(",")[0]: ln.split(",") for ln in lines[1:]}
    _extra_field(src, 1)
    _extra_field(src, 3)
    bad = {lines[1].split(",")[0], lines[3].split(",")[0]}
    m = prepare(src, tmp_path / "out", workers=1, skip_invalid=True)
    assert len(m["excluded"]) == 2 and all("fields, but the header has" in e["reason"] for e in m["excluded"])
    raw = PreparedData(tmp_path / "out").metadata(raw=True, all_rows=True)
    assert set(raw["Patient"]) == set(expected) - bad
    for _, row in raw.iterrows():
        want = expected[row["Patient"]]
        for i, col in enumerate(header[1:], 1):
            got = row[col]
            assert (pd.isna(got) and want[i] == "") or float(got) == float(want[i]), (row["Patient"], col)
    assert sorted(m["metadata"]["patients_without_csv_row"]) == sorted(bad & set(m["institutions"]))


def test_real_data_csv_with_an_extra_field_names_the_row(lgg_sample, tmp_path):
    """The real data.csv (110 rows) with one extra field on its first data row: one problem, not 106; with
    --skip-invalid the real patient keeps its true metadata."""
    src = tmp_path / "kaggle_3m"
    src.mkdir()
    folder = "TCGA_CS_4942_19970222"
    shutil.copytree(lgg_sample / folder, src / folder)
    lines = (lgg_sample / "data.csv").read_text().splitlines()
    truth = next(ln.split(",") for ln in lines if ln.startswith("TCGA_CS_4942,"))
    assert lines[1].startswith("TCGA_CS_4941,")
    lines[1] += ",1"
    (src / "data.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValidationFailed) as err:
        prepare(src, tmp_path / "out", workers=1)
    assert len(err.value.problems) == 1
    assert "line 2 (TCGA_CS_4941): 19 fields, but the header has 18" in str(err.value)
    prepare(src, tmp_path / "out", workers=1, skip_invalid=True)
    raw = PreparedData(tmp_path / "out").metadata(raw=True)
    row = raw.set_index("Patient").loc["TCGA_CS_4942"]
    header = lines[0].split(",")
    assert [("" if pd.isna(row[c]) else str(int(row[c]))) for c in header[1:]] == truth[1:]


def test_symlinked_folder_is_not_followed(src, tmp_path):
    _link(src / "up", "..")  # a loop if walks followed links
    m = prepare(src, tmp_path / "out", workers=1)
    assert m["patients"] == 4
    assert any("symlink to a folder; not followed" in w for w in m["warnings"])


def test_source_that_is_a_symlink_loop(tmp_path):
    loop = _link(tmp_path / "loop", "loop")
    with pytest.raises(PrepError, match="loop"):
        prepare(loop, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


# ---- 6. manifests that were edited or not written by orch: one PrepError naming the file and the field

def _drop(key):
    def edit(m):
        del m[key]
    return edit


def _set_shard(field, value):
    def edit(m):
        m["shards"][0][field] = value
    return edit


def _add_to_split(split, patient):
    def edit(m):
        m["split"][split].append(patient if patient != "TRAIN0" else m["split"]["train"][0])
    return edit


MANIFESTS = {
    "no_split": (_drop("split"), "'split'"),
    "no_shards": (_drop("shards"), "'shards'"),
    "split_names_unknown_patient": (_add_to_split("val", "TCGA_ZZ_9999"), "split.val"),
    "patient_in_two_splits": (_add_to_split("test", "TRAIN0"), "split.test"),
    "split_not_lists": (lambda m: m["split"].update(train="TCGA_AA_1"), "split.train"),
    "shard_outside_relative": (_set_shard("file", "../x.h5"), "shards[0].file"),
    "shard_outside_absolute": (_set_shard("file", "/etc/hostname"), "shards[0].file"),
    "shard_no_patients": (_set_shard("patients", []), "shards[0].patients"),
    "shard_no_sha256": (lambda m: m["shards"][0].pop("sha256"), "shards[0].sha256"),
    "metadata_outside": (lambda m: m["metadata"].update(file="../../secret.parquet"), "metadata.file"),
}


@pytest.fixture(scope="module")
def prepared_manifest(synth_tree, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("prepared") / "out"
    return prepare(synth_tree, out, workers=1)


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_bad_manifest_is_one_clear_error(prepared_manifest, tmp_path, case):
    edit, field = MANIFESTS[case]
    m = json.loads(json.dumps(prepared_manifest))
    edit(m)
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PrepError) as err:
        PreparedData(tmp_path)
    msg = str(err.value)
    assert field in msg and str(tmp_path / "manifest.json") in msg and "orch prep" in msg


def test_bad_manifest_through_the_cli_has_no_traceback(prepared_manifest, tmp_path):
    m = dict(prepared_manifest)
    del m["split"]
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    res = CliRunner().invoke(main, ["prep", "--verify", str(tmp_path)])
    assert res.exit_code == 1 and "'split'" in res.output and "Traceback" not in res.output
