"""``orch report SWEEP``: find the sweep's results and write the tables and plots (and, from the sweep's
per_patient.csv, the statistics).

Results come from the sweep directory's ``results.csv``; for a sweep with no directory here, from the caller's
``ResultsLoader`` (the CLI passes one that reads MLflow). This package never imports ``orchestrator.tracking``:
uploading what an outage left buffered (``orch report --sync``) is the CLI's call, before the report."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.errors import MissingPathError, ResultsError
from orchestrator.results_schema import PER_PATIENT_CSV, RESULTS_CSV


@dataclass
class SweepResults:
    """A sweep's results.csv rows, and where they were read (a path, or ``mlflow:<uri>#<sweep>``); ``patients``: its
    per-patient table (per_patient.csv: the statistics' input) where the loader found one, None where it did not."""

    frame: pd.DataFrame
    source: str
    patients: pd.DataFrame | None = None


# Sweep name -> its results (and per-patient table), for a sweep with no directory here. Raises MissingPathError
# when the place it reads does not exist (the message says which: "no MLflow store at ...").
ResultsLoader = Callable[[str], SweepResults]


@dataclass
class ReportOutcome:
    """What ``make_report`` did: where the results came from, the Markdown tables, the files written."""

    source: str  # the results.csv read, or "mlflow:<uri>#<sweep>"
    markdown: str
    paths: dict[str, Path]


def find_sweep_dir(sweep: str, storage: str | os.PathLike | None = None,
                   workdir: str | os.PathLike | None = None) -> Path | None:
    """The local directory of ``sweep``: the path itself, ``<storage>/<sweep>`` or ``<workdir>/sweeps/<sweep>``
    (the sweep's default storage), whichever holds a results.csv; None if none does."""
    return next((c for c in _candidates(sweep, storage, workdir) if (c / RESULTS_CSV).is_file()), None)


def _candidates(sweep: str, storage, workdir) -> list[Path]:
    work = Path(workdir or os.getcwd())
    return [Path(sweep)] + ([Path(storage) / sweep] if storage else []) + [work / "sweeps" / sweep]


def make_report(sweep: str, out: str | os.PathLike | None = None, storage: str | os.PathLike | None = None,
                workdir: str | os.PathLike | None = None, plots: bool = True,
                load: ResultsLoader | None = None, against: str | None = None) -> ReportOutcome:
    """Report the sweep ``sweep`` (a sweep directory or a sweep name); a sweep run with ``--folds K`` also gets
    its cross-validation table (``cv_tables.md``, appended to ``markdown``), and a sweep directory holding
    ``per_patient.csv`` (or read by ``load`` with one) its statistics (``stats_*.csv``, ``stats.md`` appended to
    ``markdown``, plots); without one ``markdown`` ends with a line saying why there are none.

    Results come from the sweep directory's ``results.csv`` when there is one, else from ``load(sweep name)``.
    Tables and plots go to ``out`` (default: the sweep directory, or ``<workdir>/reports/<sweep>`` for a sweep
    read by ``load``). A sweep screened with ``--scheduler asha`` gets its screening section; ``against`` (a
    full-grid sweep of the same grid, directory or name) says whether the full grid's winner survived it."""
    from orchestrator.report import write_report
    from orchestrator.report.cv import read_cv_results, write_cv_table
    from orchestrator.report.tables import baseline

    work = Path(workdir or os.getcwd())
    sweep_dir = find_sweep_dir(sweep, storage, work)
    results = _read_results(sweep, sweep_dir, storage, work, load)
    if results.frame.empty:
        raise ResultsError(f"sweep {sweep!r} has no results yet ({results.source}): run or resume it with "
                           "`orch sweep`")
    out_dir = Path(out) if out else (sweep_dir or work / "reports" / Path(sweep).name)
    patients = _read_patients(sweep_dir) if sweep_dir is not None else results.patients
    paths = write_report(results.frame, out_dir, plots=plots, patients=patients)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    cv = read_cv_results(sweep_dir)  # a sweep run with --folds K: its cross-validation table follows
    if cv is not None:
        paths["cv_markdown"] = write_cv_table(cv, out_dir, baseline(results.frame))
        markdown += "\n" + paths["cv_markdown"].read_text(encoding="utf-8")
    paths.update(_screening(results.frame, sweep_dir, out_dir, against, storage, work, load, plots))
    if "screening" in paths:
        markdown += "\n" + paths["screening"].read_text(encoding="utf-8")
    if "stats_markdown" in paths:
        markdown += "\n" + paths["stats_markdown"].read_text(encoding="utf-8")
    else:
        markdown += f"\nStatistics skipped: {_no_patients(sweep_dir, results.source)}\n"
    return ReportOutcome(source=results.source, markdown=markdown, paths=paths)


def _screening(results: pd.DataFrame, sweep_dir: Path | None, out_dir: Path, against: str | None, storage,
               work: Path, load: ResultsLoader | None, plots: bool) -> dict[str, Path]:
    """The screening files of a sweep screened with ASHA ({} for one that was not), compared with the full-grid
    sweep ``against`` when given."""
    from orchestrator.report.screening import report_screening

    full = _read_results(against, find_sweep_dir(against, storage, work), storage, work, load).frame if against \
        else None
    return report_screening(results, sweep_dir, out_dir, full, plots=plots)


def _no_patients(sweep_dir: Path | None, source: str) -> str:
    """Why a report has no per-patient table to compute statistics from (one sentence)."""
    if sweep_dir is not None:
        return (f"no {PER_PATIENT_CSV} in the sweep directory {sweep_dir} (a sweep from an older orch): the "
                "per-patient scores they need are not here.")
    return (f"the results read from {source} come without {PER_PATIENT_CSV} (the sweep's parent run holds none: "
            "a sweep still running, or one from an older orch): the per-patient scores they need are not here.")


def _read_patients(sweep_dir: Path | None) -> pd.DataFrame | None:
    """The sweep directory's per-patient table (the statistics' input), None when it has none."""
    path = sweep_dir / PER_PATIENT_CSV if sweep_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _read_results(sweep: str, sweep_dir: Path | None, storage, work: Path,
                  load: ResultsLoader | None) -> SweepResults:
    """The sweep directory's results.csv, else what ``load`` finds; MissingPathError naming where both looked."""
    if sweep_dir is not None:
        csv = sweep_dir / RESULTS_CSV
        return SweepResults(pd.read_csv(csv), str(csv))
    looked = ", ".join(str(p) for p in _candidates(sweep, storage, work))
    if load is None:
        raise MissingPathError(f"sweep {sweep!r} not found: no results.csv in {looked}; pass the sweep directory "
                               "or --storage")
    try:
        return load(Path(sweep).name)
    except MissingPathError as e:
        raise MissingPathError(
            f"sweep {sweep!r} not found: no results.csv in {looked}, and {e}; pass the sweep directory, --storage, "
            "or --tracking-uri of the store the sweep recorded into") from e
