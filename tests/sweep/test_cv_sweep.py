"""A real `--folds 2` sweep of one configuration on a local Ray (CPU), tracked in a real MLflow SQLite store:
every patient is tested exactly once, the CV files are written, logged on the parent run, and reported."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from data_prep import make_synthetic, prepare
from data_prep.folds import cv_folds
from data_prep.split import institution
from orchestrator.config import SweepConfig
from orchestrator.report import make_report
from orchestrator.sweep import run_sweep
from tests.sweep.conftest import TINY, write_grid

pytestmark = pytest.mark.slow

CONFIG = "resnet18-adam-lr1e-03"


@pytest.fixture(scope="module")
def prepared6(tmp_path_factory):
    """6 short synthetic patients: 2 folds of 3, each fold's other 3 give 2 train + 1 val patients."""
    root = tmp_path_factory.mktemp("cv-data")
    make_synthetic(root / "src", patients=6, seed=5, min_slices=20, max_slices=21)
    prepare(root / "src", root / "prepared", workers=1)
    return root / "prepared"


def test_fold_sweep_tests_every_patient_once_and_reports_it(prepared6, tmp_path):
    # Every test slice is scored (no max_eval_slices): a fold that scores only some of its patients is incomplete.
    tiny = {k: v for k, v in TINY.items() if k != "max_eval_slices"}
    grid = write_grid(tmp_path / "one.csv", [{"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "epochs": 1,
                                              **tiny}])
    cfg = SweepConfig(name="cv", grid=str(grid), data=str(prepared6), storage=str(tmp_path / "sweeps"), folds=2)
    out = run_sweep(cfg, workdir=tmp_path)

    results = pd.read_csv(out.results_csv)
    assert list(results["trial_id"]) == [f"{CONFIG}-fold1", f"{CONFIG}-fold2"]
    assert list(results["fold"]) == [1, 2] and set(results["status"]) == {"finished"}

    manifest = json.loads((prepared6 / "manifest.json").read_text())
    patients = sorted(p for s in manifest["shards"] for p in s["patients"])
    folds = cv_folds([(p, institution(p)) for p in patients], 2, seed=int(manifest["split"]["seed"]))
    cv_dir = out.results_dir / "cv" / CONFIG
    per_patient = pd.read_csv(cv_dir / "cv_per_patient.csv")
    assert sorted(per_patient["patient"]) == patients  # each patient exactly once
    assert {r.patient: r.fold for r in per_patient.itertuples()} == {p: k for k, f in enumerate(folds, 1) for p in f}
    assert per_patient["dice"].between(0, 1).all()
    # A fold's test patients are those its trial scored as "test" in its own run directory.
    fold2 = pd.read_csv(f"{results['run_dir'][1]}/per_patient_dice.csv")
    assert sorted(fold2.loc[fold2["split"] == "test", "patient"]) == folds[1]

    cv = pd.read_csv(out.results_dir / "cv_results.csv")
    assert len(cv) == 1
    row = cv.iloc[0]
    assert (row["config_id"], row["encoder"], row["optimizer"], row["lr"], row["loss"]) == (
        CONFIG, "resnet18", "adam", 1e-3, "bce_dice")  # the recipe default
    assert bool(row["complete"]) and (row["folds_finished"], row["n_patients"], row["n_expected"]) == (2, 6, 6)
    assert row["mean"] == pytest.approx(per_patient["dice"].mean())
    assert row["median"] == pytest.approx(np.median(per_patient["dice"]))
    assert row["ci95_low"] <= row["mean"] <= row["ci95_high"]
    assert json.loads((cv_dir / "cv_summary.json").read_text())["missing_patients"] == []
    assert (cv_dir / "cv_dice.png").stat().st_size > 0

    # The parent run holds the CV files under report/, each configuration's in its own folder.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("cv")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/results.csv", "report/cv_results.csv", "report/cv"} <= logged
    cv_logged = {a.path for a in client.list_artifacts(parent.info.run_id, f"report/cv/{CONFIG}")}
    assert {f"report/cv/{CONFIG}/cv_per_patient.csv", f"report/cv/{CONFIG}/cv_dice.png"} <= cv_logged

    rep = make_report(str(out.results_dir), plots=False)
    line = next(ln for ln in rep.markdown.splitlines() if ln.startswith(f"| {CONFIG} |"))
    assert "| 2/2 | 6/6 |" in line and "| complete |" in line and f"{row['mean']:.3f}" in line
    assert "| Buda et al. 2019 (CV) |" in rep.markdown
