"""`orch sweep --folds K`: every grid row becomes K trials, planned and packed like any trial (no Ray)."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.config import SweepConfig
from orchestrator.grids import GridError, config_id, load_grid, with_folds
from orchestrator.sweep import dry_run
from orchestrator.sweep.plan import plan_sweep
from tests.sweep.conftest import done_outcome, write_grid


def test_with_folds_makes_k_trials_per_row_with_fold_ids_and_configs():
    rows = load_grid("smoke")
    trials = with_folds(rows, 3)
    assert len(trials) == 3 * len(rows)
    first = rows[0]
    assert [t.trial_id for t in trials[:3]] == [f"{first.trial_id}-fold{k}" for k in (1, 2, 3)]
    assert [(t.config.folds, t.config.fold) for t in trials[:3]] == [(3, 1), (3, 2), (3, 3)]
    # Nothing but the fold changes, and the ids are those `orch train --folds` gives its runs.
    assert all(t.config.replace(folds=None, fold=None) == r.config for t, r in zip(trials, [r for r in rows
                                                                                         for _ in range(3)]))
    assert all(t.trial_id == t.config.short_name for t in trials)
    assert {config_id(t.trial_id, t.config.fold) for t in trials} == {r.trial_id for r in rows}
    assert config_id("resnet34-adamw-lr1e-03-fold2", 2) == "resnet34-adamw-lr1e-03"
    assert config_id("resnet34-adamw-lr1e-03", None) == "resnet34-adamw-lr1e-03"
    assert with_folds(rows, None) == rows


def test_with_folds_refuses_one_fold_and_rows_that_set_folds(tmp_path):
    with pytest.raises(GridError, match="at least 2 folds"):
        with_folds(load_grid("smoke"), 1)
    grid = write_grid(tmp_path / "g.csv", [{"encoder": "resnet18", "folds": 5}])
    with pytest.raises(GridError, match="pass --folds K"):
        with_folds(load_grid(grid), None)
    with pytest.raises(GridError, match="pass --folds K"):
        with_folds(load_grid(grid), 5)


def test_plan_expands_folds_and_packs_them_like_any_trial():
    cfg = SweepConfig(grid="paper", folds=5)
    plans = plan_sweep(cfg, load_grid("paper"), use_gpus=True)
    assert len(plans) == 45 * 5 and len({p.trial_id for p in plans}) == 225
    fold_of = {p.trial_id: p.config.fold for p in plans}
    assert fold_of["resnet50-adam-lr1e-04-fold4"] == 4
    assert {p.config.folds for p in plans} == {5}
    # A fold gets the GPU share of its depth; the largest encoders still start first.
    assert {p.gpus for p in plans if p.config.encoder == "resnet18"} == {0.25}
    assert [p.config.encoder for p in plans[:45]] == ["resnet152"] * 45
    # dry_run (what `orch sweep --dry-run` prints) goes through the same expansion.
    assert [p.trial_id for p in dry_run(cfg, gpus=1)] == [p.trial_id for p in plans]


def test_dry_run_shows_the_fold_trials():
    res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--folds", "2", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 2 * len(load_grid("smoke"))
    assert "resnet18-adam-lr1e-03-fold2" in {r["trial_id"] for r in rows}
    assert {r["config"]["fold"] for r in rows} == {1, 2}
    res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--folds", "2", "--dry-run", "--address", "auto"])
    assert res.exit_code == 0, res.output
    assert "4 configurations x 2 folds = 8 trials" in res.output


def test_folds_option_reaches_the_sweep_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with mock.patch("orchestrator.sweep.runner.run_sweep", return_value=done_outcome()) as run:
        res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--data", str(tmp_path), "--folds", "5",
                                        "--no-tracking"])
    assert res.exit_code == 0, res.output
    assert run.call_args.args[0].folds == 5
    with mock.patch("orchestrator.sweep.runner.run_sweep", return_value=done_outcome()) as run:
        res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--data", str(tmp_path), "--no-tracking"])
    assert res.exit_code == 0 and run.call_args.args[0].folds is None
    res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--data", str(tmp_path), "--folds", "1"])
    assert res.exit_code == 2 and "--folds" in res.output
