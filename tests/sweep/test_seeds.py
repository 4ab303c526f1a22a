"""``orch sweep --seeds N``: every trial N times with seeds 0..N-1 (``grids.with_seeds``, composed with folds), the
seed column of results.csv, the per-patient tables (each run directory's and the sweep's, gathered by
``orchestrator.sweep.patients``), and a real tiny sweep whose statistics match scipy on its stored table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from click.testing import CliRunner

from orchestrator.config import ConfigError, SweepConfig, TrainConfig
from orchestrator.grids import GridError, config_id, expand, load_grid, with_folds, with_seeds
from orchestrator.results_schema import (
    PATIENT_COLUMNS,
    SWEEP_PATIENT_COLUMNS,
    config_row,
    parse_config,
    results_columns,
)
from orchestrator.sweep import storage as st
from orchestrator.sweep.cv import write_sweep_cv
from orchestrator.sweep.patients import gather_patients, write_sweep_patients
from orchestrator.sweep.plan import plan_sweep
from orchestrator.training.outcome import TrainResult, write_result
from tests.sweep.conftest import TINY, write_grid

ROW = "resnet34-adamw-lr1e-03"


def test_with_seeds_repeats_every_row_with_seeds_0_to_n_minus_1():
    rows = load_grid("smoke")
    trials = with_seeds(rows, 3)
    assert len(trials) == 3 * len(rows)
    first = rows[0]
    assert [(t.trial_id, t.config.seed) for t in trials[:3]] == [(f"{first.trial_id}-seed{s}", s) for s in range(3)]
    assert all(t.config == r.config.replace(seed=t.config.seed) for t, r in zip(trials, np.repeat(rows, 3)))
    assert with_seeds(rows, None) == rows
    with pytest.raises(GridError, match="at least 1"):
        with_seeds(rows, 0)
    assert {config_id(t.trial_id, None, t.config.seed) for t in trials} == {r.trial_id for r in rows}


def test_seeds_compose_with_folds_one_trial_per_fold_and_seed():
    rows = load_grid("smoke")
    trials = expand(rows, folds=2, seeds=2)
    assert len(trials) == 4 * len(rows) and trials == with_seeds(with_folds(rows, 2), 2)
    first = rows[0].trial_id
    assert [t.trial_id for t in trials[:4]] == [f"{first}-fold1-seed0", f"{first}-fold1-seed1",
                                                f"{first}-fold2-seed0", f"{first}-fold2-seed1"]
    assert [(t.config.folds, t.config.fold, t.config.seed) for t in trials[:4]] == [(2, 1, 0), (2, 1, 1), (2, 2, 0),
                                                                                     (2, 2, 1)]
    assert {config_id(t.trial_id, t.config.fold, t.config.seed) for t in trials} == {r.trial_id for r in rows}
    assert config_id(f"{ROW}-fold2-seed1", 2, 1) == ROW == config_id(f"{ROW}-seed1", None, 1) == config_id(ROW, None)
    assert config_id(f"{ROW}-fold2", 2) == ROW  # the two-argument form of --folds keeps working


def test_a_grid_that_sets_seed_is_refused_with_seeds(tmp_path):
    grid = write_grid(tmp_path / "g.csv", [{"encoder": "resnet18", "seed": 0}, {"encoder": "resnet34"}])
    rows = load_grid(grid)
    assert [e.config.seed for e in rows] == [0, 0] and len(expand(rows)) == 2  # without --seeds: as before
    with pytest.raises(GridError, match="already set seed.*--seeds N"):
        with_seeds(rows, 2)
    with pytest.raises(GridError, match="already set seed"):
        with_seeds(load_grid("smoke", overrides={"seed": 3}), 2)
    with pytest.raises(ConfigError, match="seeds=0"):
        SweepConfig(grid="smoke", seeds=0)


def test_the_plan_is_seeds_x_folds_trials_and_another_seeds_is_another_sweep(tmp_path):
    rows = load_grid("smoke")
    plans = plan_sweep(SweepConfig(grid="smoke", folds=2, seeds=3), rows, use_gpus=False)
    assert len(plans) == 6 * len(rows) and {p.config.seed for p in plans} == {0, 1, 2}
    st.check_plan(str(tmp_path), "orch-sweep.json", plans, "smoke")
    st.check_plan(str(tmp_path), "orch-sweep.json", list(reversed(plans)), "smoke")  # the same trials: fine
    for other in (SweepConfig(grid="smoke", folds=2, seeds=2), SweepConfig(grid="smoke", folds=2),
                  SweepConfig(grid="smoke", folds=2, seeds=1)):
        with pytest.raises(ConfigError, match="started with other configurations"):
            st.check_plan(str(tmp_path), "orch-sweep.json", plan_sweep(other, rows, use_gpus=False), "smoke")


def test_results_rows_have_a_seed_only_for_repeats():
    cols = list(results_columns())
    assert cols[cols.index("fold") + 1] == "seed"
    cfg = TrainConfig(encoder="resnet18", seed=1)
    assert config_row("r-seed1", cfg)["seed"] == 1
    assert config_row("r", cfg)["seed"] is None and config_row("r", TrainConfig())["seed"] is None
    logged = {k: str(v) for k, v in cfg.to_dict().items()}
    assert parse_config({**logged, "trial_id": "r-fold1-seed1"})["seed"] == 1
    assert parse_config({**logged, "trial_id": "r"})["seed"] is None and parse_config(logged)["seed"] is None


def test_dry_run_shows_the_seeds(monkeypatch):
    from orchestrator.cli import main

    monkeypatch.setattr("orchestrator.sweep.detect_local_gpus", lambda: 0)
    res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--seeds", "2", "--folds", "2", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    ids = {(t["trial_id"], t["config"]["seed"], t["config"]["fold"]) for t in json.loads(res.output)}
    assert (f"{load_grid('smoke')[0].trial_id}-fold2-seed1", 1, 2) in ids and len(ids) == 16
    res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--seeds", "2", "--dry-run"])
    assert res.exit_code == 0 and "4 configurations x 2 seeds = 8 trials" in res.output
    assert CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--seeds", "0", "--dry-run"]).exit_code == 2


# ----- per-patient tables: each run directory's, gathered into the sweep's (hand-made run directories) -----

def _run_dir(root: Path, trial_id: str, dice: dict[str, float], config: TrainConfig | None = None,
             status: str = "finished") -> Path:
    """A run directory as ``fit`` leaves it (``write_result``), with val and test rows."""
    run_dir = root / trial_id / "checkpoint_000001"
    run_dir.mkdir(parents=True)
    val = [{"split": "val", "patient": "TCGA_VV_0", "dice": 0.9, "tumour_pixels_true": 5, "tumour_pixels_pred": 4}]
    test = [{"split": "test", "patient": p, "dice": d, "tumour_pixels_true": 100, "tumour_pixels_pred": 90 + i}
            for i, (p, d) in enumerate(dice.items())]
    write_result(TrainResult(status=status, epochs_completed=1, best_epoch=1, best_val={}, test={},
                             per_patient=val + test, history=[], run_dir=run_dir), config)
    return run_dir


def _row(trial_id: str, status: str, run_dir, fold=None, seed=None, enc="resnet18") -> dict:
    return {"trial_id": trial_id, "encoder": enc, "optimizer": "adam", "lr": 1e-3, "loss": "bce", "fold": fold,
            "seed": seed, "status": status, "run_dir": None if run_dir is None else str(run_dir)}


def test_a_run_directory_holds_its_test_patients_as_a_long_table(tmp_path):
    cfg = TrainConfig(encoder="resnet18", folds=2, fold=1, seed=3)
    run_dir = _run_dir(tmp_path, "t", {"TCGA_A_1": 0.5, "TCGA_B_2": 0.75}, cfg)
    table = pd.read_csv(run_dir / "per_patient.csv")
    assert list(table.columns) == list(PATIENT_COLUMNS)
    assert table.to_dict("records") == [
        {"patient": "TCGA_A_1", "split": "test", "fold": 1, "seed": 3, "dice_volume": 0.5, "tumour_pixels_true": 100,
         "tumour_pixels_pred": 90},
        {"patient": "TCGA_B_2", "split": "test", "fold": 1, "seed": 3, "dice_volume": 0.75, "tumour_pixels_true": 100,
         "tumour_pixels_pred": 91}]
    assert len(pd.read_csv(run_dir / "per_patient_dice.csv")) == 3  # kept as it was: val and test rows
    # Without a config: fold and seed from the config.json the run claimed its directory with, else empty.
    other = _run_dir(tmp_path, "u", {"TCGA_A_1": 0.5})
    assert pd.read_csv(other / "per_patient.csv")[["fold", "seed"]].isna().all().all()
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text(json.dumps(TrainConfig(seed=2).to_dict()))
    write_result(TrainResult("finished", 1, 1, {}, {}, [{"split": "test", "patient": "P", "dice": 1.0}], [],
                             tmp_path / "w"))
    assert pd.read_csv(tmp_path / "w" / "per_patient.csv")[["fold", "seed"]].iloc[0].tolist()[1] == 2


def test_the_sweep_gathers_every_trials_patients_in_the_stats_layout(tmp_path):
    runs = tmp_path / "runs"
    a = {"TCGA_A_1": 0.5, "TCGA_B_2": 0.7}
    rows = [
        _row("a-seed0", "finished", _run_dir(runs, "a-seed0", a, TrainConfig(seed=0)), seed=0),
        # read through a file:// URI, as a remote storage is
        _row("a-seed1", "diverged", "file://" + str(_run_dir(runs, "a-seed1", {"TCGA_A_1": 0.1, "TCGA_B_2": 0.2},
                                                             TrainConfig(seed=1), status="diverged")), seed=1),
        _row("b-seed0", "error", None, seed=0, enc="resnet34"),
        _row("b-seed1", "finished", _run_dir(runs, "b-seed1", {"TCGA_A_1": 0.9}), seed=1, enc="resnet34"),
        _row("c-seed0", "finished", runs / "gone", seed=0),  # its run directory is gone: left out with a warning
    ]
    # A trial finished by an older orch: per_patient_dice.csv only.
    (runs / "b-seed1" / "checkpoint_000001" / "per_patient.csv").unlink()
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    table = write_sweep_patients(pd.DataFrame(rows), sweep)
    on_disk = pd.read_csv(sweep / "per_patient.csv")
    assert list(on_disk.columns) == list(SWEEP_PATIENT_COLUMNS) == list(table.columns)
    assert list(on_disk["trial_id"]) == ["a-seed0", "a-seed0", "a-seed1", "a-seed1", "b-seed1"]
    assert list(on_disk["config_id"]) == ["a", "a", "a", "a", "b"] and list(on_disk["seed"]) == [0, 0, 1, 1, 1]
    assert list(on_disk["dice_volume"]) == [0.5, 0.7, 0.1, 0.2, 0.9] and set(on_disk["split"]) == {"test"}
    assert list(on_disk["encoder"]) == ["resnet18"] * 4 + ["resnet34"] and on_disk["fold"].isna().all()
    assert list(on_disk["tumour_pixels_pred"]) == [90, 91, 90, 91, 90]
    empty = gather_patients(pd.DataFrame([_row("x", "error", None)]))
    assert empty.empty and list(empty.columns) == list(SWEEP_PATIENT_COLUMNS)


def test_each_seeds_folds_form_one_cross_validation(tmp_path):
    folds = {1: ["P1", "P2"], 2: ["P3", "P4"]}
    rows = []
    for s in (0, 1):
        for k, patients in folds.items():
            tid = f"{ROW}-fold{k}-seed{s}"
            cfg = TrainConfig(folds=2, fold=k, seed=s)
            rows.append(_row(tid, "finished", _run_dir(tmp_path / "runs", tid, {p: 0.2 + 0.5 * s for p in patients},
                                                       cfg), fold=k, seed=s))
    results = pd.DataFrame(rows)
    cv = write_sweep_cv(results, tmp_path / "sweep", folds=2, patients=["P1", "P2", "P3", "P4"])
    assert list(cv["config_id"]) == [f"{ROW}-seed0", f"{ROW}-seed1"] and cv["complete"].all()
    assert list(cv["mean"]) == pytest.approx([0.2, 0.7])
    patients = gather_patients(results)
    assert set(patients["config_id"]) == {ROW} and len(patients) == 8


# ----- a real tiny sweep with --seeds 2 -----

@pytest.mark.slow
def test_a_seeded_sweep_writes_per_patient_tables_and_statistics_scipy_agrees_with(prepared_tested, tmp_path):
    from orchestrator.sweep import run_sweep

    # One step at these learning rates leaves seed 1's models predicting some tumour (seed 0's, and sgd's, none):
    # per-patient scores that differ between configurations, so the statistics have something to compare.
    grid = write_grid(tmp_path / "three.csv", [{"encoder": "resnet18", "optimizer": o, "lr": lr, "loss": loss}
                                               for o, lr, loss in (("adam", 1e-2, "dice"), ("adam", 1e-1, "bce_dice"),
                                                                   ("sgd", 1e-1, "dice"))])
    # Every slice of the 4 test patients is evaluated: the statistics pair configurations over patients.
    cfg = SweepConfig(grid=str(grid), data=str(prepared_tested), storage=str(tmp_path / "sweeps"), seeds=2,
                      overrides={**TINY, "epochs": 1, "image_size": 32, "max_eval_slices": 1000})
    out = run_sweep(cfg, tracking=None, workdir=tmp_path)
    df = pd.read_csv(out.results_csv)
    assert out.counts == {"finished": 6} and list(df["seed"]) == [0, 1] * 3
    for run_dir, seed in zip(df["run_dir"], df["seed"]):
        own = pd.read_csv(Path(run_dir) / "per_patient.csv")
        assert len(own) == 4 and set(own["split"]) == {"test"} and set(own["seed"]) == {seed}

    sweep = out.results_dir
    table = pd.read_csv(sweep / "per_patient.csv")
    assert len(table) == sum(len(pd.read_csv(Path(d) / "per_patient.csv")) for d in df["run_dir"])
    assert set(table["config_id"]) == {e.trial_id for e in load_grid(grid)}
    assert (sweep / "stats.md").is_file() and out.report["stats_markdown"] == sweep / "stats.md"

    wide = table.pivot_table(index="patient", columns="config_id", values="dice_volume", aggfunc="mean").dropna()
    vs_best = pd.read_csv(sweep / "stats_vs_best.csv")
    means = wide.mean()
    assert vs_best["config_id"].iloc[0] == means.round(12).sort_values(ascending=False).index[0]
    assert dict(zip(vs_best["config_id"], vs_best["mean"])) == pytest.approx(means.to_dict())
    assert len(wide) == 4 and wide.nunique(axis=1).gt(1).any()  # the configurations score patients differently
    chi2, p = scipy.stats.friedmanchisquare(*(wide[c] for c in wide.columns))
    assert vs_best["friedman_chi2"].iloc[0] == pytest.approx(chi2)
    assert vs_best["friedman_p"].iloc[0] == pytest.approx(p)
    best = vs_best["config_id"].iloc[0]
    for r in vs_best.iloc[1:].itertuples():
        diff = wide[r.config_id] - wide[best]
        want = scipy.stats.wilcoxon(diff).pvalue if (diff != 0).any() else 1.0
        assert r.p == pytest.approx(want), r.config_id
    assert f"**{best} is best**" in (sweep / "stats.md").read_text()
    summary = pd.read_csv(sweep / "stats_summary.csv").set_index("config_id")
    per_config = table.groupby(["config_id", "patient"])["dice_volume"].mean().groupby("config_id").mean()
    assert summary["mean"].to_dict() == pytest.approx(per_config.to_dict())
