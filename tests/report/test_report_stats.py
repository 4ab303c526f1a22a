"""``orch report SWEEP`` and the sweep's report with statistics: a sweep directory holding per_patient.csv gets
stats_*.csv, stats.md (appended to the printed Markdown) and its plots; without enough data, one line says why."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from click.testing import CliRunner

from orchestrator.report import make_report, write_report
from orchestrator.results_schema import SWEEP_PATIENT_COLUMNS

# config id -> (encoder, optimizer, lr, effect on every patient's Dice)
CONFIGS = {"resnet34-adam-lr1e-03": ("resnet34", "adam", 1e-3, 0.0),
           "resnet18-adam-lr1e-03": ("resnet18", "adam", 1e-3, -0.02),
           "resnet18-sgd-lr1e-02": ("resnet18", "sgd", 1e-2, -0.4)}
BEST = "resnet34-adam-lr1e-03"


def _sweep(root: Path, configs=CONFIGS, seeds=(0, 1), patients: int = 12) -> Path:
    """A sweep directory as ``orch sweep --seeds 2`` leaves it: results.csv and per_patient.csv."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.5, 0.9, patients)
    results, rows = [], []
    for cid, (enc, opt, lr, effect) in configs.items():
        for s in seeds:
            tid = f"{cid}-seed{s}"
            dice = np.clip(base + effect + rng.normal(0, 0.02, patients), 0, 1)
            results.append({"trial_id": tid, "encoder": enc, "optimizer": opt, "lr": lr, "seed": s,
                            "status": "finished", "test_dice_volume_mean": dice.mean()})
            rows += [{"config_id": cid, "trial_id": tid, "encoder": enc, "optimizer": opt, "lr": lr, "patient": f"P{p}",
                      "split": "test", "fold": None, "seed": s, "dice_volume": d, "tumour_pixels_true": 100,
                      "tumour_pixels_pred": 80} for p, d in enumerate(dice)]
    sweep = root / "sweeps" / "seeded"
    sweep.mkdir(parents=True)
    pd.DataFrame(results).to_csv(sweep / "results.csv", index=False)
    pd.DataFrame(rows, columns=list(SWEEP_PATIENT_COLUMNS)).to_csv(sweep / "per_patient.csv", index=False)
    return sweep


def test_report_of_a_sweep_with_per_patient_scores_writes_the_statistics(tmp_path):
    sweep = _sweep(tmp_path)
    rep = make_report(str(sweep))
    for name in ("stats_summary.csv", "stats_vs_best.csv", "stats_factors.csv", "stats_ranks.csv", "stats.md",
                 "plot_stats_ci.png", "plot_rank_stability.png", "plot_factor_encoder.png"):
        assert (sweep / name).is_file(), name
    assert rep.paths["stats_markdown"] == sweep / "stats.md"
    assert f"**{BEST} is best**" in rep.markdown
    assert rep.markdown.index("### Learning rate") < rep.markdown.index("### Which differences are real")
    vs_best = pd.read_csv(sweep / "stats_vs_best.csv").set_index("config_id")
    assert vs_best.index[0] == BEST and not vs_best.loc["resnet18-sgd-lr1e-02", "tied"]
    assert vs_best["n_patients"].iloc[0] == 12


def test_the_cli_prints_the_statistics_after_the_tables(tmp_path, monkeypatch):
    from orchestrator.cli import main

    _sweep(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["report", "seeded", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert f"**{BEST} is best**" in res.output and "wrote stats_markdown:" in res.output
    assert not (tmp_path / "sweeps" / "seeded" / "plot_stats_ci.png").exists()


def test_too_little_data_skips_the_statistics_with_one_line(tmp_path):
    one = _sweep(tmp_path / "one", configs={BEST: CONFIGS[BEST]})
    rep = make_report(str(one), plots=False)
    assert "Statistics skipped: 1 configuration(s) with per-patient test scores" in rep.markdown
    assert not (one / "stats_vs_best.csv").exists()

    old = _sweep(tmp_path / "old")
    (old / "per_patient.csv").unlink()  # a sweep from an older orch
    rep = make_report(str(old), plots=False)
    assert "stats_markdown" not in rep.paths and not (old / "stats.md").exists()
    assert rep.markdown.rstrip().splitlines()[-1].startswith("Statistics skipped: no per_patient.csv")

    empty = _sweep(tmp_path / "empty")
    (empty / "per_patient.csv").write_text(",".join(SWEEP_PATIENT_COLUMNS) + "\n")  # no trial left a result
    assert "Statistics skipped: no per-patient test scores" in make_report(str(empty), plots=False).markdown


def test_write_report_without_a_per_patient_table_is_as_before(tmp_path):
    sweep = _sweep(tmp_path)
    paths = write_report(pd.read_csv(sweep / "results.csv"), tmp_path / "out", plots=False)
    assert set(paths) == {"csv", "markdown"} and not (tmp_path / "out" / "stats.md").exists()


def test_the_parent_run_uploads_the_statistics_and_the_per_patient_table(tmp_path):
    from orchestrator.tracking.sweep import SweepTracker

    sweep = _sweep(tmp_path)
    make_report(str(sweep))
    client = mock.Mock()
    SweepTracker("uri", "1", "parent", "seeded")._upload_report(client, sweep)
    logged = {Path(c.args[1]).name for c in client.log_artifact.call_args_list}
    assert {"per_patient.csv", "stats_summary.csv", "stats_vs_best.csv", "stats_factors.csv", "stats_ranks.csv",
            "stats.md", "plot_stats_ci.png", "plot_rank_stability.png", "plot_factor_lr.png", "results.csv"} <= logged

    run_dir = tmp_path / "train-run"  # `orch train`: its own per_patient.csv goes to its child run, not the parent
    run_dir.mkdir()
    (run_dir / "per_patient.csv").write_text("patient\n")
    client = mock.Mock()
    SweepTracker("uri", "1", "parent", "run")._upload_report(client, run_dir)
    assert not client.log_artifact.called
