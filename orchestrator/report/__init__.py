"""Reports of a sweep: the paper's tables beside ours (CSV + Markdown) and plots, from the sweep directory's
``results.csv`` or from a frame of the same columns that a caller read elsewhere (the CLI: MLflow).

    write_tables(results, out_dir)   # paper_tables.csv, paper_tables.md
    write_plots(results, out_dir)    # plot_dice_vs_speed.png, plot_heatmap_<encoder>.png, plot_paper_vs_ours.png
    write_report(results, out_dir)   # both (the sweep calls this once, before its MLflow finish uploads them)
    write_report(results, out_dir, patients=table)  # and the statistics of the per-patient table (stats_*, stats.md)
    make_report(sweep, ...)          # what `orch report SWEEP` does

Imports nothing of ``orchestrator.tracking``: reading MLflow is the caller's (``make_report(load=...)``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from orchestrator.errors import ResultsError
from orchestrator.files import atomic_write_text
from orchestrator.report.tables import (
    BASELINE,
    PRIMARY,
    paper_layout,
    paper_results,
    to_markdown,
    write_tables,
)
from orchestrator.report.tables import baseline as measured_baseline


def write_plots(results: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """The sweep's plots (see ``orchestrator.report.sweep_plots``); imported lazily: matplotlib is slow to load."""
    from orchestrator.report.sweep_plots import write_plots as _write_plots

    return _write_plots(results, out_dir)


log = logging.getLogger(__name__)

STATS_HEADING = "### Which differences are real"  # stats.md's first line, also when the section is skipped
# Bootstrap resamples of the statistics: 2,000 for the CIs, 1,000 for the ranks (a 45-configuration table takes a
# few seconds on one core; tests/report/test_report_stats.py times it).
N_BOOT, N_BOOT_RANK = 2000, 1000


def statistics_skipped(patients: pd.DataFrame | None) -> str | None:
    """Why the per-patient table ``patients`` gets no statistics section (one line), or None when it does."""
    if patients is None or patients.empty or "config_id" not in patients.columns:
        return "no per-patient test scores (per_patient.csv is empty or missing: no trial left a result)"
    test = patients if "split" not in patients.columns else patients[patients["split"].astype(str) == "test"]
    scored = test.dropna(subset=["dice_volume"]) if "dice_volume" in test.columns else test.iloc[:0]
    n = scored["config_id"].nunique()
    if n < 2:
        return f"{n} configuration(s) with per-patient test scores; comparing them needs at least 2"
    return None


def write_statistics(patients: pd.DataFrame | None, out_dir: str | os.PathLike,
                     plots: bool = True, baseline: float | None = None) -> dict[str, Path]:
    """The statistics section (``orchestrator.report.stats``: ``stats_*.csv``, ``stats.md`` and its plots) of the
    per-patient table into ``out_dir``, against the predict-nothing Dice/volume ``baseline`` (default: the full
    LGG's, ``BASELINE``; ``write_report`` passes the one measured on the trials' test patients); when it cannot be
    computed (``statistics_skipped``, or no patient scored by every configuration) ``stats.md`` holds the one line
    why."""
    from orchestrator.report.stats_report import write_statistics as _write_statistics

    why = statistics_skipped(patients)
    if why is None:
        try:
            base = BASELINE["Dice/volume"] if baseline is None else baseline
            return _write_statistics(patients, out_dir, plots, baseline=base, n_boot=N_BOOT, n_boot_rank=N_BOOT_RANK)
        except ResultsError as e:
            why = str(e)
    log.info("statistics skipped: %s", why)
    path = Path(out_dir) / "stats.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, f"{STATS_HEADING}\n\nStatistics skipped: {why.rstrip('.')}.\n")
    return {"stats_markdown": path}


def write_report(results: pd.DataFrame, out_dir: str | os.PathLike, plots: bool = True,
                 patients: pd.DataFrame | None = None) -> dict[str, Path]:
    """Tables and (unless ``plots`` is False) plots of ``results`` (one row per configuration) into ``out_dir``;
    with ``patients`` (the sweep's per_patient.csv table) also the statistics (``write_statistics``). Returns the
    files written by key (``csv``, ``markdown``, ``dice_vs_speed``, ``stats_markdown``, ...)."""
    paths = write_tables(results, out_dir)
    if plots:
        paths.update(write_plots(results, out_dir))
    if patients is not None:
        paths.update(write_statistics(patients, out_dir, plots,
                                      baseline=measured_baseline(results).figures["Dice/volume"]))
    return paths


def make_report(*args, **kwargs):
    """``orch report``: see ``orchestrator.report.build.make_report``."""
    from orchestrator.report.build import make_report as _make_report

    return _make_report(*args, **kwargs)


__all__ = ["BASELINE", "PRIMARY", "make_report", "paper_layout", "paper_results", "to_markdown", "write_plots",
           "write_report", "write_statistics", "write_tables"]
