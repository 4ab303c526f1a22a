"""Reports of a sweep: the paper's tables beside ours (CSV + Markdown) and plots, from the sweep directory's
``results.csv`` or from a frame of the same columns that a caller read elsewhere (the CLI: MLflow).

    write_tables(results, out_dir)   # paper_tables.csv, paper_tables.md
    write_plots(results, out_dir)    # plot_dice_vs_speed.png, plot_heatmap_<encoder>.png, plot_paper_vs_ours.png
    write_report(results, out_dir)   # both (the sweep calls this once, before its MLflow finish uploads them)
    make_report(sweep, ...)          # what `orch report SWEEP` does

Imports nothing of ``orchestrator.tracking``: reading MLflow is the caller's (``make_report(load=...)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from orchestrator.report.tables import (
    BASELINE,
    PRIMARY,
    paper_layout,
    paper_results,
    to_markdown,
    write_tables,
)


def write_plots(results: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """The sweep's plots (see ``orchestrator.report.sweep_plots``); imported lazily: matplotlib is slow to load."""
    from orchestrator.report.sweep_plots import write_plots as _write_plots

    return _write_plots(results, out_dir)


def write_report(results: pd.DataFrame, out_dir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
    """Tables and (unless ``plots`` is False) plots of ``results`` (one row per configuration) into ``out_dir``;
    returns the files written by key (``csv``, ``markdown``, ``dice_vs_speed``, ...)."""
    paths = write_tables(results, out_dir)
    if plots:
        paths.update(write_plots(results, out_dir))
    return paths


def make_report(*args, **kwargs):
    """``orch report``: see ``orchestrator.report.build.make_report``."""
    from orchestrator.report.build import make_report as _make_report

    return _make_report(*args, **kwargs)


__all__ = ["BASELINE", "PRIMARY", "make_report", "paper_layout", "paper_results", "to_markdown", "write_plots",
           "write_report", "write_tables"]
