"""The report's predict-nothing baseline comes from the trials' own test slices (results.csv's test_baseline_*),
not from the full LGG's figures, which stand in (labelled) only for a results table without those columns; the
sweep plots fit a full sweep; the statistics text counts in the singular where there is one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from orchestrator.fmt import count_noun
from orchestrator.report import paper_results, sweep_plots, write_tables
from orchestrator.report.cv import cv_markdown
from orchestrator.report.stats_report import _power_note, statistics_markdown
from orchestrator.report.tables import REFERENCE_LABEL, baseline
from orchestrator.results_schema import baseline_key

# A predict-nothing baseline as issue 14 quotes it for a demo's synthetic test patients (mIoU 0.498, Dice 0.618).
MEASURED = {baseline_key("miou_2class"): 0.498, baseline_key("dice_slice_all_empty1"): 0.618,
            baseline_key("dice_volume_mean"): 0.0}


def _results(with_baseline: bool = True, n: int = 2) -> pd.DataFrame:
    """``n`` of the paper's configurations as finished trials that score below the predict-nothing Dice."""
    rows = []
    for r in paper_results().head(n).itertuples():
        row = {"trial_id": f"{r.encoder}-{r.optimizer}-{r.lr:g}", "encoder": r.encoder, "optimizer": r.optimizer,
               "lr": r.lr, "status": "finished", "test_dice_volume_mean": 0.06, "test_dice_slice_all_empty1": 0.63,
               "test_miou_2class": 0.40, "test_loss": 3.0, "it_per_s": 2.0}
        rows.append({**row, **(MEASURED if with_baseline else {})})
    return pd.DataFrame(rows)


def _baseline_line(md: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if "| baseline |" in ln)
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_baseline_row_is_the_test_patients_own(tmp_path):
    md = write_tables(_results(), tmp_path)["markdown"].read_text()
    cells = _baseline_line(md)
    assert cells[0] == "predict nothing"
    assert (cells[6], cells[8], cells[9]) == ("0.498", "0.618", "0.000")  # Mean IoU, Dice, Dice/volume (ours)
    assert "scores Mean IoU 0.498, Dice 0.618 and Dice/volume 0.000 on these test patients" in md
    assert "on the full LGG dataset it scores Mean IoU 0.495 and Dice 0.651" in md  # the paper's reference, named
    table = pd.read_csv(tmp_path / "paper_tables.csv")
    assert table.loc[table["status"] == "baseline", "Dice (ours)"].tolist() == [0.618]


def test_a_results_table_without_baseline_columns_gets_the_labelled_reference(tmp_path):
    md = write_tables(_results(with_baseline=False), tmp_path)["markdown"].read_text()
    cells = _baseline_line(md)
    assert cells[0] == REFERENCE_LABEL == "predict nothing (full LGG)"
    assert (cells[6], cells[8]) == ("0.495", "0.651")
    assert "on the full LGG dataset (the predict nothing (full LGG) row: this results table has no " \
           "test_baseline_* columns" in md


def test_trials_tested_on_different_patients_average_their_baselines():
    results = _results(n=3)
    results.loc[0, baseline_key("dice_slice_all_empty1")] = 0.6
    results.loc[1, baseline_key("dice_slice_all_empty1")] = 0.7
    results.loc[2, baseline_key("dice_slice_all_empty1")] = None  # a trial that never reached its test pass
    b = baseline(results)
    assert b.measured and b.varies and b.figures["Dice"] == pytest.approx(0.65)
    assert "mean over the trials' test sets" in b.where
    assert not baseline(_results()).varies


def test_the_cv_table_labels_its_baseline():
    cv = pd.DataFrame([{"config_id": "c", "encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "loss": "bce",
                        "folds": 5, "folds_finished": 5, "n_patients": 10, "n_expected": 10, "mean": 0.8,
                        "median": 0.8, "ci95_low": 0.7, "ci95_high": 0.9, "complete": True}])
    assert "| predict nothing (full LGG) |" in cv_markdown(cv)
    assert "| predict nothing |" in cv_markdown(cv, baseline(_results()))


def test_the_sweep_plots_draw_the_measured_baseline_and_fit_a_full_sweep(tmp_path, monkeypatch):
    drawn = {}
    save = sweep_plots._save

    def keep(fig, path):
        fig.canvas.draw()
        drawn[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(sweep_plots, "_save", keep)
    paths = sweep_plots.write_plots(_results(n=45), tmp_path)
    widths = {name: Image.open(p).size[0] for name, p in paths.items()}
    assert max(widths.values()) <= 2000, widths  # was 3,702 px for plot_paper_vs_ours
    labels = [t for ax in drawn["plot_paper_vs_ours.png"].axes for t in ax.get_legend_handles_labels()[1]]
    assert "predict nothing (test patients): Dice 0.618" in labels
    assert "predict nothing (test patients): mIoU 0.498" in labels
    ours = drawn["plot_dice_vs_speed.png"].axes[0].get_legend_handles_labels()[1]
    assert "predict nothing, test patients (0.000)" in ours


def _overlaps(fig) -> list[str]:
    """What overlaps in a heatmap figure: the right panel's optimizer labels with the left panel, the figure title
    with the panel titles."""
    renderer = fig.canvas.get_renderer()
    left, right = fig.axes[0], fig.axes[1]
    found = [f"label {t.get_text()}" for t in right.get_yticklabels()
             if t.get_window_extent(renderer).x0 <= left.get_window_extent(renderer).x1]
    title = fig._suptitle.get_window_extent(renderer)
    return found + [f"title over {ax.get_title()}" for ax in (left, right)
                    if title.overlaps(ax.title.get_window_extent(renderer))]


def test_heatmap_labels_do_not_overlap(tmp_path, monkeypatch):
    found = []
    save = sweep_plots._save

    def check(fig, path):
        fig.canvas.draw()
        found.append(_overlaps(fig))
        return save(fig, path)

    monkeypatch.setattr(sweep_plots, "_save", check)
    sweep_plots.heatmaps(_results(n=3), tmp_path)
    assert found == [[], [], []]  # one figure per depth, nothing overlapping


def test_counts_agree_in_number():
    assert (count_noun(1, "patient"), count_noun(3, "patient"), count_noun(0, "patient")) == (
        "1 patient", "3 patients", "0 patients")
    note = _power_note(1, 1, 0.05)
    assert "With 1 patient no comparison" in note and "x 1 comparison (Holm)" in note


def test_statistics_of_one_patient_say_patient(tmp_path):
    from orchestrator.report.stats import analyse

    table = pd.DataFrame([{"config_id": c, "trial_id": c, "encoder": "resnet18", "optimizer": o, "lr": 1e-3,
                           "patient": "P1", "split": "test", "fold": None, "seed": None, "dice_volume": d,
                           "tumour_pixels_true": 10, "tumour_pixels_pred": 5}
                          for c, o, d in (("a", "adam", 0.7), ("b", "sgd", 0.5))])
    md = statistics_markdown(analyse(table, n_boot=50, n_boot_rank=50))
    assert "1 patients" not in md and "1 test patients" not in md
    assert "on the 1 test patient that all of them scored" in md and "1 patient)" in md
    assert np.isfinite(analyse(table, n_boot=50, n_boot_rank=50).summary["mean"]).all()


def test_orch_report_passes_the_measured_baseline_to_the_cv_table_and_the_statistics(tmp_path, monkeypatch):
    from orchestrator.report import make_report, stats_plots

    sweep = tmp_path / "cvs"
    sweep.mkdir()
    results = _results(n=2).assign(**{baseline_key("dice_volume_mean"): 0.25})  # one test patient without tumour
    results.to_csv(sweep / "results.csv", index=False)
    pd.DataFrame([{"config_id": r.trial_id, "encoder": r.encoder, "optimizer": r.optimizer, "lr": r.lr,
                   "loss": "bce", "folds": 5, "folds_finished": 5, "n_patients": 10, "n_expected": 10, "mean": 0.8,
                   "median": 0.8, "ci95_low": 0.7, "ci95_high": 0.9, "complete": True} for r in results.itertuples()]
                 ).to_csv(sweep / "cv_results.csv", index=False)
    pd.DataFrame([{"config_id": r.trial_id, "trial_id": r.trial_id, "encoder": r.encoder, "optimizer": r.optimizer,
                   "lr": r.lr, "patient": f"P{p}", "split": "test", "fold": None, "seed": None,
                   "dice_volume": 0.5 + 0.05 * p + 0.1 * i, "tumour_pixels_true": 10, "tumour_pixels_pred": 8}
                  for i, r in enumerate(results.itertuples()) for p in range(6)]).to_csv(sweep / "per_patient.csv",
                                                                                       index=False)
    drawn = []
    real = stats_plots._baseline
    monkeypatch.setattr(stats_plots, "_baseline",
                        lambda ax, base, low, high: (drawn.append(base), real(ax, base, low, high))[1])
    rep = make_report(str(sweep), plots=True)
    cv_base = next(ln for ln in rep.paths["cv_markdown"].read_text().splitlines() if "| baseline |" in ln)
    assert cv_base.startswith("| predict nothing |") and "| 0.250 | 0.250 |" in cv_base
    assert drawn == [0.25]  # the statistics' CI plot draws the measured predict-nothing Dice/volume, not the LGG 0
