"""Reports of a sweep: the paper's tables beside ours (CSV + Markdown) and plots, from the sweep directory's
``results.csv`` or from MLflow.

    write_tables(results, out_dir)   # paper_tables.csv, paper_tables.md   (the sweep calls this)
    write_plots(results, out_dir)    # plot_dice_vs_speed.png, plot_heatmap_<encoder>.png, plot_paper_vs_ours.png
    write_report(results, out_dir)   # both
    make_report(sweep, ...)          # what `orch report SWEEP` does
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


def write_report(results: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Tables and plots of ``results`` (one row per configuration) into ``out_dir``."""
    return {**write_tables(results, out_dir), **write_plots(results, out_dir)}


def make_report(*args, **kwargs):
    """``orch report``: see ``orchestrator.report.build.make_report``."""
    from orchestrator.report.build import make_report as _make_report

    return _make_report(*args, **kwargs)


__all__ = ["BASELINE", "PRIMARY", "make_report", "paper_layout", "paper_results", "to_markdown", "write_plots",
           "write_report", "write_tables"]
