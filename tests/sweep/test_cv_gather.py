"""Gathering a --folds sweep's fold trials into cv/<config id>/ and cv_results.csv (run directories written the
way the training loop writes them; no Ray). A failed fold makes its configuration incomplete, never a mean over
fewer patients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.config import ConfigError
from orchestrator.sweep.cv import CV_RESULTS, check_folds, data_patients, write_sweep_cv
from orchestrator.training.outcome import TrainResult, write_result

FOLDS = {1: ["TCGA_CS_1", "TCGA_DU_2", "TCGA_HT_3"], 2: ["TCGA_CS_4", "TCGA_DU_5", "TCGA_FG_6"]}
PATIENTS = sorted(p for ps in FOLDS.values() for p in ps)


def _run_dir(root: Path, trial_id: str, fold: int, dice: dict[str, float], status: str = "finished") -> Path:
    """A run directory as `fit` leaves it: result.json with val and test per-patient rows."""
    run_dir = root / trial_id / "checkpoint_000002"
    run_dir.mkdir(parents=True)
    val = [{"split": "val", "patient": "TCGA_XX_9", "dice": 0.99, "tumour_pixels_true": 1, "tumour_pixels_pred": 1}]
    test = [{"split": "test", "patient": p, "dice": d, "tumour_pixels_true": 100 + i, "tumour_pixels_pred": 90}
            for i, (p, d) in enumerate(dice.items())]
    write_result(TrainResult(status=status, epochs_completed=1, best_epoch=1, best_val={}, test={
        "dice_volume_mean": float(np.mean(list(dice.values())))}, per_patient=val + test, history=[],
        run_dir=run_dir))
    return run_dir


def _row(cid: str, fold: int, status: str, run_dir) -> dict:
    return {"trial_id": f"{cid}-fold{fold}", "encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "loss": "bce",
            "fold": fold, "status": status, "run_dir": None if run_dir is None else str(run_dir)}


def test_gathers_every_patient_once_and_marks_incomplete_configurations(tmp_path):
    rng = np.random.default_rng(0)
    dice = {p: float(rng.uniform(0.2, 0.9)) for p in PATIENTS}
    runs = tmp_path / "runs"
    rows = [
        # complete: both folds finished (fold 2 read through a file:// URI, as remote storage is)
        _row("a", 1, "finished", _run_dir(runs, "a-fold1", 1, {p: dice[p] for p in FOLDS[1]})),
        _row("a", 2, "diverged", "file://" + str(_run_dir(runs, "a-fold2", 2, {p: dice[p] for p in FOLDS[2]},
                                                          status="diverged"))),
        # fold 2 errored: 3 of 6 patients
        _row("b", 1, "finished", _run_dir(runs, "b-fold1", 1, {p: 0.5 for p in FOLDS[1]})),
        _row("b", 2, "error", None),
        # both folds finished, but fold 1 scored only 2 of its 3 patients (max_eval_slices): still incomplete
        _row("c", 1, "finished", _run_dir(runs, "c-fold1", 1, {p: 0.5 for p in FOLDS[1][:2]})),
        _row("c", 2, "finished", _run_dir(runs, "c-fold2", 2, {p: 0.5 for p in FOLDS[2]})),
        # nothing finished
        _row("d", 1, "unfinished", None), _row("d", 2, "pending", None),
    ]
    sweep_dir = tmp_path / "sweep"
    table = write_sweep_cv(pd.DataFrame(rows), sweep_dir, folds=2, patients=PATIENTS)

    on_disk = pd.read_csv(sweep_dir / CV_RESULTS)
    assert list(on_disk["config_id"]) == ["a", "b", "c", "d"] == list(table["config_id"])
    a, b, c, d = (on_disk.iloc[i] for i in range(4))
    assert bool(a["complete"]) and (a["folds_finished"], a["n_patients"], a["n_expected"]) == (2, 6, 6)
    assert a["mean"] == pytest.approx(np.mean(list(dice.values())))
    assert a["median"] == pytest.approx(np.median(list(dice.values())))
    assert a["ci95_low"] <= a["mean"] <= a["ci95_high"]
    assert (a["encoder"], a["optimizer"], a["lr"], a["loss"], a["cv_dir"]) == ("resnet18", "adam", 1e-3, "bce", "cv/a")

    per_patient = pd.read_csv(sweep_dir / "cv" / "a" / "cv_per_patient.csv")
    assert sorted(per_patient["patient"]) == PATIENTS  # every patient exactly once, no val rows
    assert {r.patient: r.fold for r in per_patient.itertuples()} == {p: k for k, ps in FOLDS.items() for p in ps}
    assert dict(zip(per_patient["patient"], per_patient["dice"])) == pytest.approx(dice)
    assert (sweep_dir / "cv" / "a" / "cv_dice.png").stat().st_size > 0
    assert json.loads((sweep_dir / "cv" / "a" / "cv_summary.json").read_text())["complete"] is True

    assert not b["complete"] and (b["folds_finished"], b["n_patients"], b["missing_patients"]) == (1, 3, 3)
    summary_b = json.loads((sweep_dir / "cv" / "b" / "cv_summary.json").read_text())
    assert summary_b["missing_patients"] == FOLDS[2] and summary_b["complete"] is False
    assert not c["complete"] and (c["folds_finished"], c["n_patients"], c["missing_patients"]) == (2, 5, 1)
    assert not d["complete"] and (d["folds_finished"], d["n_patients"]) == (0, 0) and pd.isna(d["mean"])
    assert not (sweep_dir / "cv" / "d").exists()


def test_patients_and_fold_count_come_from_the_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": [{"patients": [p]} for p in PATIENTS[::-1]]}))
    assert data_patients(str(tmp_path)) == PATIENTS
    assert check_folds(str(tmp_path), 6) == PATIENTS
    with pytest.raises(ConfigError, match="2 to 6 folds"):
        check_folds(str(tmp_path), 7)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        data_patients(str(tmp_path / "nowhere"))
