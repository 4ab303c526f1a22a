"""`orch report` of a sweep run with --folds: the cross-validation table beside the published figures."""

from __future__ import annotations

import pandas as pd
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.report import make_report
from orchestrator.report.cv import cv_markdown
from orchestrator.training.cv import PUBLISHED


def _cv() -> pd.DataFrame:
    return pd.DataFrame([
        {"config_id": "resnet34-adamw-lr1e-03", "encoder": "resnet34", "optimizer": "adamw", "lr": 1e-3,
         "loss": "bce_dice", "folds": 5, "folds_finished": 5, "n_patients": 110, "n_expected": 110, "mean": 0.8123,
         "median": 0.8701, "ci95_low": 0.7804, "ci95_high": 0.8412, "complete": True, "missing_patients": 0,
         "cv_dir": "cv/resnet34-adamw-lr1e-03"},
        {"config_id": "resnet18-sgd-lr1e-02", "encoder": "resnet18", "optimizer": "sgd", "lr": 1e-2, "loss": "bce",
         "folds": 5, "folds_finished": 4, "n_patients": 88, "n_expected": 110, "mean": 0.9555, "median": 0.9,
         "ci95_low": 0.9, "ci95_high": 0.99, "complete": False, "missing_patients": 22,
         "cv_dir": "cv/resnet18-sgd-lr1e-02"},
    ])


def _line(md: str, start: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {start} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_cv_table_shows_complete_figures_and_references_and_hides_incomplete_means():
    md = cv_markdown(_cv())
    assert "Cross-validation (5 folds)" in md
    assert _line(md, "resnet34-adamw-lr1e-03") == ["resnet34-adamw-lr1e-03", "resnet34", "adamw", "0.001", "bce_dice",
                                                   "5/5", "110/110", "0.812", "0.870", "0.780-0.841", "complete"]
    incomplete = _line(md, "resnet18-sgd-lr1e-02")
    assert incomplete[7:10] == ["–", "–", "–"] and "0.956" not in md
    assert incomplete[10] == "incomplete: 4 of 5 folds, 88 of 110 patients"
    assert _line(md, "Buda et al. 2019 (CV)")[7] == "0.820" == f"{PUBLISHED['Buda et al. 2019 (CV)']:.3f}"
    assert _line(md, "human readers")[7] == "0.840"
    assert _line(md, "predict nothing (full LGG)")[7:9] == ["0.000", "0.000"]  # cv_results.csv: no baseline


def test_report_of_a_fold_sweep_appends_the_cv_table(tmp_path, monkeypatch):
    sweep = tmp_path / "sweeps" / "cvs"
    sweep.mkdir(parents=True)
    pd.DataFrame([{"trial_id": f"resnet34-adamw-lr1e-03-fold{k}", "encoder": "resnet34", "optimizer": "adamw",
                   "lr": 1e-3, "fold": k, "status": "finished", "test_dice_volume_mean": 0.8} for k in range(1, 6)]
                 ).to_csv(sweep / "results.csv", index=False)
    rep = make_report(str(sweep), plots=False)
    assert "Cross-validation" not in rep.markdown and "cv_markdown" not in rep.paths  # no cv_results.csv yet

    _cv().to_csv(sweep / "cv_results.csv", index=False)
    rep = make_report(str(sweep), plots=False)
    assert rep.paths["cv_markdown"] == sweep / "cv_tables.md"
    assert rep.markdown.index("### Learning rate") < rep.markdown.index("### Cross-validation")
    assert _line(rep.markdown, "resnet34-adamw-lr1e-03")[9] == "0.780-0.841"

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["report", "cvs", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "| Buda et al. 2019 (CV) |" in res.output and "| resnet34-adamw-lr1e-03 |" in res.output
