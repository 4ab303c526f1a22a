"""Hostile inputs to ``orch predict`` and ``orch evaluate`` (issue 10): ``..`` in INPUT, symlink loops and
duplicate links in the trees, symlinks inside OUT, masks that are float, NaN or hold stray values.

Each case builds real files (TIFFs via tifffile, links via os.symlink) in ``tmp_path`` and runs the command
through the CLI: the output must land inside OUT, a loop is a warning naming the link, a bad mask is an error
naming the file and saying what is expected, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from orchestrator.cli import main

SLICES = 2  # slices copied per patient: enough for a volume, cheap to predict on a CPU


def _patient(source: Path, index: int, dest_parent: Path, name: str | None = None) -> Path:
    """Copy the first SLICES images (no masks) of the ``index``-th synthetic patient into ``dest_parent/<name>``."""
    src = sorted(p for p in source.iterdir() if p.is_dir())[index]
    dest = dest_parent / (name or src.name)
    dest.mkdir(parents=True)
    for n in range(1, SLICES + 1):
        shutil.copy(src / f"{src.name}_{n}.tif", dest / f"{src.name}_{n}.tif")
    return dest


# Each case builds INPUT and OUT under tmp and returns (INPUT as typed, OUT, expectation). The expectation is
# {"masks": {output folder: mask count}, "warn": [...]} for a run that succeeds, or {"error": [...]} for one
# that must fail: the substrings the output must hold.
Case = Callable[[Path, Path], tuple[str, Path, dict]]


def _dotdot(source: Path, tmp: Path):
    # INPUT ends in sub/..: the patient folder itself, which once was named ".." and wrote into OUT's parent
    p = _patient(source, 0, tmp / "in")
    (p / "sub").mkdir()
    return str(p / "sub" / ".."), tmp / "work" / "out", {"masks": {p.name: SLICES}, "warn": []}


def _loop_to_itself(source: Path, tmp: Path):
    p = _patient(source, 0, tmp / "in")
    os.symlink(p, p / "again")  # in/P/again -> in/P: once 41 copies of P, then ENAMETOOLONG
    return str(tmp / "in"), tmp / "work" / "out", {"masks": {p.name: SLICES}, "warn": ["again", "loops back"]}


def _loop_to_root(source: Path, tmp: Path):
    p = _patient(source, 0, tmp / "in")
    q = _patient(source, 1, tmp / "in")
    os.symlink("..", q / "up")  # relative link in/Q/up -> in
    return (str(tmp / "in"), tmp / "work" / "out",
            {"masks": {p.name: SLICES, q.name: SLICES}, "warn": ["up", "loops back"]})


def _link_to_a_folder_inside(source: Path, tmp: Path):
    p = _patient(source, 0, tmp / "in")
    os.symlink(p, tmp / "in" / "A_copy")  # sorts before TCGA_...: the real folder must still win
    return str(tmp / "in"), tmp / "work" / "out", {"masks": {p.name: SLICES}, "warn": ["A_copy", "already read"]}


def _link_to_a_patient_elsewhere(source: Path, tmp: Path):
    # a tree assembled from links: followed, and the output folder takes the link's name
    p = _patient(source, 0, tmp / "elsewhere", name="stored_here")
    q = _patient(source, 1, tmp / "in")
    os.symlink(p, tmp / "in" / "TCGA_LINKED")
    return (str(tmp / "in"), tmp / "work" / "out",
            {"masks": {"TCGA_LINKED": SLICES, q.name: SLICES}, "warn": []})


def _two_links_to_one_patient(source: Path, tmp: Path):
    p = _patient(source, 0, tmp / "elsewhere")
    (tmp / "in").mkdir()
    os.symlink(p, tmp / "in" / "A")
    os.symlink(p, tmp / "in" / "B")  # the same slices again: skipped, not predicted twice
    return str(tmp / "in"), tmp / "work" / "out", {"masks": {"A": SLICES}, "warn": ["B", "already read"]}


def _symlink_inside_out(source: Path, tmp: Path):
    p = _patient(source, 0, tmp / "in")
    out = tmp / "work" / "out"
    out.mkdir(parents=True)
    (tmp / "work" / "elsewhere").mkdir()
    os.symlink(tmp / "work" / "elsewhere", out / p.name)  # OUT/P -> outside OUT: masks would escape through it
    return str(p), out, {"error": [str(out / p.name), "outside OUT", "elsewhere"]}


PREDICT_CASES: dict[str, Case] = {
    "input ends in sub/..": _dotdot,
    "symlink loop to its own folder": _loop_to_itself,
    "symlink loop to INPUT": _loop_to_root,
    "symlink to a folder inside INPUT": _link_to_a_folder_inside,
    "symlink to a patient outside INPUT": _link_to_a_patient_elsewhere,
    "two symlinks to one patient": _two_links_to_one_patient,
    "symlink inside OUT leading out": _symlink_inside_out,
}


@pytest.mark.parametrize("build", PREDICT_CASES.values(), ids=PREDICT_CASES.keys())
def test_predict_writes_only_inside_out_and_never_follows_a_loop(trained, tmp_path, caplog, build):
    root, source, _ = trained
    caplog.set_level(logging.WARNING)
    input_dir, out, expect = build(source, tmp_path)
    r = CliRunner().invoke(main, ["predict", str(root / "run" / "best.pt"), input_dir, str(out), "--device", "cpu",
                                  "--no-overlays"])
    assert "Traceback" not in r.output and not isinstance(r.exception, OSError), r.output
    # nothing beside OUT: its parent holds OUT and whatever the case put there itself
    assert {p.name for p in out.parent.iterdir()} <= {"elsewhere", "out"}
    if "error" in expect:
        assert r.exit_code == 1, r.output
        for text in expect["error"]:
            assert text in r.output, (text, r.output)
        assert not any((tmp_path / "work" / "elsewhere").iterdir())  # checked before writing anything
        assert not (out / "patients.csv").exists()
        return
    assert r.exit_code == 0, r.output
    written = {d.name: len(list(d.glob("*_mask.tif"))) for d in out.iterdir() if d.is_dir()}
    assert written == expect["masks"]
    assert len((out / "patients.csv").read_text().splitlines()) == 1 + len(expect["masks"])
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for text in expect["warn"]:
        assert text in warnings, (text, warnings)
    if not expect["warn"]:
        assert "symlink" not in warnings


# ---- orch evaluate: what a mask may hold --------------------------------------------------------------------

TRUTH = [np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)]
TRUTH[1][4:8, 4:8] = 255  # slice 2 holds a 16-pixel tumour
NAN = np.full((16, 16), np.nan, np.float32)


def _mask_tree(root: Path, masks: list[np.ndarray], folder: str = "TCGA_XX_0001_20000101") -> Path:
    """``root/<folder>/<folder>_<n>_mask.tif`` for n = 1, 2, ...: real TIFFs of exactly these arrays."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    for n, m in enumerate(masks, start=1):
        tifffile.imwrite(root / folder / f"{folder}_{n}_mask.tif", m)
    return root


# (side holding the bad mask, its slice-2 array, substrings the error must hold)
BAD_MASKS = {
    "all-NaN float prediction": ("pred", NAN, ["float32", "256 of 256 pixels NaN", "integer or boolean", "0/255"]),
    "float 0/1 prediction": ("pred", (TRUTH[1] > 0).astype(np.float32), ["float32", "threshold it", "uint8 0/255"]),
    "float probabilities": ("pred", np.linspace(0, 1, 256).reshape(16, 16), ["float64", "0/255"]),
    "float truth": ("truth", TRUTH[1].astype(np.float32), ["truth mask", "float32", "0/255"]),
    "stray value 7": ("pred", np.where(TRUTH[1] > 0, 255, 7).astype(np.uint8), ["values {7, 255}", "0/255"]),
    "0/1 and 255 mixed": ("pred", np.array([0, 1, 255] * 85 + [0], np.uint8).reshape(16, 16), ["values {0, 1, 255}"]),
    "negative int16": ("pred", np.where(TRUTH[1] > 0, -1, 0).astype(np.int16), ["values {-1, 0}"]),
    "uint16 0/65535 truth": ("truth", np.where(TRUTH[1] > 0, 65535, 0).astype(np.uint16),
                             ["truth mask", "values {0, 65535}"]),
}


@pytest.mark.parametrize(("side", "bad", "says"), BAD_MASKS.values(), ids=BAD_MASKS.keys())
def test_evaluate_rejects_masks_that_are_not_integer_0_255_or_0_1(tmp_path, side, bad, says):
    masks = {"pred": list(TRUTH), "truth": list(TRUTH)}
    masks[side][1] = bad
    pred, truth = _mask_tree(tmp_path / "pred", masks["pred"]), _mask_tree(tmp_path / "truth", masks["truth"])
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(truth)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert str(tmp_path / side / "TCGA_XX_0001_20000101" / "TCGA_XX_0001_20000101_2_mask.tif") in r.output
    for text in says:
        assert text in r.output, (text, r.output)


GOOD_PREDICTIONS = {
    "uint8 0/255": TRUTH[1],
    "uint8 0/1": (TRUTH[1] > 0).astype(np.uint8),
    "bool": TRUTH[1] > 0,
    "int32 0/1": (TRUTH[1] > 0).astype(np.int32),
}


@pytest.mark.parametrize("good", GOOD_PREDICTIONS.values(), ids=GOOD_PREDICTIONS.keys())
def test_evaluate_accepts_every_integer_or_boolean_0_1_or_0_255_mask(tmp_path, good):
    pred = _mask_tree(tmp_path / "pred", [np.zeros((16, 16), bool), good])
    truth = _mask_tree(tmp_path / "truth", TRUTH)
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(truth), "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["dice_global"] == 1.0  # however it is stored


@pytest.mark.parametrize("side", ["pred", "truth"])
def test_evaluate_walks_a_symlink_loop_once_and_names_it(tmp_path, caplog, side):
    caplog.set_level(logging.WARNING)
    pred, truth = _mask_tree(tmp_path / "pred", TRUTH), _mask_tree(tmp_path / "truth", TRUTH)
    loop = tmp_path / side / "TCGA_XX_0001_20000101" / "loop"
    os.symlink(tmp_path / side, loop)
    r = CliRunner().invoke(main, ["evaluate", str(pred), str(truth), "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.json").read_text())["slices"] == 2
    assert any(str(loop) in rec.getMessage() and "loops back" in rec.getMessage() for rec in caplog.records)
