"""The paper-layout tables and plots from a sweep's results table, and ``orch report SWEEP_DIR``."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.report import make_report, paper_results, write_plots, write_report, write_tables
from orchestrator.report.build import SweepResults


def _results() -> pd.DataFrame:
    """Three configurations as a sweep writes them: one finished at lr 1e-3, one diverged at 1e-2, and one
    at a learning rate the paper never ran."""
    return pd.DataFrame([
        {"trial_id": "a", "encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "status": "finished",
         "test_dice_volume_mean": 0.71, "test_dice_slice_all_empty1": 0.83, "test_miou_2class": 0.77,
         "test_loss": 0.021, "it_per_s": 1.5},
        {"trial_id": "b", "encoder": "resnet34", "optimizer": "sgd", "lr": 1e-2, "status": "diverged",
         "test_dice_volume_mean": None, "it_per_s": 1.2},
        {"trial_id": "c", "encoder": "resnet50", "optimizer": "rmsprop", "lr": 3e-4, "status": "finished",
         "test_dice_volume_mean": 0.5, "test_dice_slice_all_empty1": 0.7, "test_miou_2class": 0.6,
         "test_loss": 0.03, "it_per_s": 0.9},
    ])


def test_reference_is_the_papers_45_rows():
    ref = paper_results()
    assert list(ref.columns) == ["lr", "optimizer", "encoder", "loss", "mean_iou", "dice", "it_per_s"]
    assert len(ref) == 45 and ref.groupby(["lr", "optimizer", "encoder"]).ngroups == 45
    assert sorted(ref["lr"].unique()) == [1e-4, 1e-3, 1e-2] and set(ref["optimizer"]) == {"adam", "sgd", "rmsprop"}
    assert set(ref["encoder"]) == {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
    best = ref.loc[ref["dice"].idxmax()]
    assert (best["encoder"], best["optimizer"], best["lr"], best["dice"], best["mean_iou"]) == (
        "resnet50", "adam", 1e-4, 0.932, 0.904)
    # Every published figure, pinned by its column sums (as transcribed from Tables 2-4 of the paper): a figure
    # changed by mistake changes a sum.
    assert ref[["loss", "mean_iou", "dice", "it_per_s"]].sum().round(3).to_dict() == {
        "loss": 0.958, "mean_iou": 34.921, "dice": 35.94, "it_per_s": 240.82}


def test_tables_put_ours_beside_the_paper_with_the_baseline(tmp_path):
    paths = write_tables(_results(), tmp_path)
    table = pd.read_csv(paths["csv"])
    # One section per lr we ran (1e-2, 1e-3, 3e-4): the paper's 15 rows (none at 3e-4), ours, one baseline row.
    sizes = table.groupby("lr").size().to_dict()
    assert sizes == {1e-2: 16, 1e-3: 16, 3e-4: 2}
    row = table[(table["lr"] == 1e-3) & (table["optimizer"] == "adam") & (table["encoder"] == "resnet18")].iloc[0]
    assert (row["Loss (paper)"], row["Mean IoU (paper)"], row["Dice (paper)"], row["it/s (paper)"]) == (
        0.006, 0.897, 0.926, 9.12)
    assert (row["Loss (ours)"], row["Mean IoU (ours)"], row["Dice (ours)"], row["Dice/volume (ours)"],
            row["it/s (ours)"]) == (0.021, 0.77, 0.83, 0.71, 1.5)
    assert row["status"] == "finished"
    diverged = table[(table["lr"] == 1e-2) & (table["optimizer"] == "sgd") & (table["encoder"] == "resnet34")]
    assert diverged.iloc[0]["status"] == "diverged" and diverged.iloc[0]["Dice (paper)"] == 0.812
    not_run = table[(table["lr"] == 1e-3) & (table["encoder"] == "resnet152") & (table["optimizer"] == "sgd")]
    assert not_run.iloc[0]["status"] == "not run" and pd.isna(not_run.iloc[0]["Dice (ours)"])
    base = table[table["optimizer"] == "predict nothing (full LGG)"]  # no test_baseline_* columns: the reference
    assert len(base) == 3
    assert set(base["Dice (ours)"]) == {0.651} and set(base["Mean IoU (ours)"]) == {0.495}
    # Rows in the paper's order: optimizers adam, sgd, rmsprop; depths ascending; baseline last.
    sec = table[table["lr"] == 1e-3]
    assert list(sec["optimizer"].iloc[:5]) == ["adam"] * 5 and list(sec["encoder"].iloc[:5]) == [
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert sec["optimizer"].iloc[-1] == "predict nothing (full LGG)"

    md = paths["markdown"].read_text()
    assert md.index("### Learning rate 0.01") < md.index("### Learning rate 0.001") < md.index(
        "### Learning rate 0.0003")
    assert "| adam | resnet18 | finished | 0.006 | 0.021 | 0.897 | 0.770 | 0.926 | 0.830 | 0.710 | 9.12 | 1.50 |" in md
    assert "| predict nothing (full LGG) |  | baseline | – | – | – | 0.495 | – | 0.651 | 0.000 | – | – |" in md


def test_bad_results_name_the_missing_columns_and_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="lacks the column.*optimizer"):
        write_tables(pd.DataFrame([{"encoder": "resnet18", "lr": 1e-3}]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plots_are_written(tmp_path):
    paths = write_plots(_results(), tmp_path)
    assert set(paths) == {"dice_vs_speed", "paper_vs_ours", "heatmap_resnet18", "heatmap_resnet34",
                          "heatmap_resnet50"}
    for p in paths.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert not list(tmp_path.glob("*.tmp*"))


def test_orch_report_prints_and_writes_from_a_sweep_dir(tmp_path, monkeypatch):
    sweep = tmp_path / "sweeps" / "demo"
    sweep.mkdir(parents=True)
    _results().to_csv(sweep / "results.csv", index=False)
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["report", "demo"])  # by name: found in ./sweeps
    assert out.exit_code == 0, out.output
    assert f"results: {sweep / 'results.csv'}" in out.output
    assert "### Learning rate 0.001" in out.output and "predict nothing" in out.output
    assert "| 0.830 | 0.710 |" in out.output
    assert (sweep / "paper_tables.md").is_file() and (sweep / "plot_dice_vs_speed.png").is_file()
    report_dir = tmp_path / "elsewhere"
    out = CliRunner().invoke(main, ["report", str(sweep), "--out", str(report_dir), "--no-plots"])
    assert out.exit_code == 0 and (report_dir / "paper_tables.csv").is_file()
    assert not list(report_dir.glob("plot_*"))


def test_orch_report_unknown_sweep_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["report", "nope"])
    assert out.exit_code == 1
    assert "sweep 'nope' not found" in out.output and "--tracking-uri" in out.output
    assert not (tmp_path / "mlflow.db").exists()


def test_write_report_is_tables_and_plots(tmp_path):
    paths = write_report(_results(), tmp_path)
    assert {"csv", "markdown", "dice_vs_speed", "paper_vs_ours"} <= set(paths)


def test_a_sweep_without_a_directory_is_read_through_the_callers_loader(tmp_path):
    rep = make_report("elsewhere", workdir=tmp_path, plots=False,
                      load=lambda name: SweepResults(_results(), f"loaded:{name}"))
    assert rep.source == "loaded:elsewhere" and "### Learning rate 0.001" in rep.markdown
    assert rep.paths["markdown"] == tmp_path / "reports" / "elsewhere" / "paper_tables.md"
