"""``orch report SWEEP``: find the sweep's results (its directory, else MLflow), optionally upload what an outage
left buffered, and write the tables and plots."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from orchestrator.errors import MissingPathError, ResultsError

log = logging.getLogger(__name__)

BUFFER_DIRNAME = "mlflow-buffer"  # <sweep dir>/mlflow-buffer: where the sweep's trials buffer MLflow records


@dataclass
class ReportOutcome:
    """What ``make_report`` did: where the results came from, the Markdown tables, the files written."""

    source: str  # the results.csv read, or "mlflow:<uri>#<sweep>"
    markdown: str
    paths: dict[str, Path]
    synced: list[str] = field(default_factory=list)  # trials whose buffered records were uploaded
    still_buffered: list[str] = field(default_factory=list)


def find_sweep_dir(sweep: str, storage: str | os.PathLike | None = None,
                   workdir: str | os.PathLike | None = None) -> Path | None:
    """The local directory of ``sweep``: the path itself, ``<storage>/<sweep>`` or ``<workdir>/sweeps/<sweep>``
    (the sweep's default storage), whichever holds a results.csv; None if none does."""
    return next((c for c in _candidates(sweep, storage, workdir) if (c / "results.csv").is_file()), None)


def _candidates(sweep: str, storage, workdir) -> list[Path]:
    work = Path(workdir or os.getcwd())
    return [Path(sweep)] + ([Path(storage) / sweep] if storage else []) + [work / "sweeps" / sweep]


def make_report(sweep: str, out: str | os.PathLike | None = None, storage: str | os.PathLike | None = None,
                tracking_uri: str | None = None, sync: bool = False, buffer_dir: str | os.PathLike | None = None,
                workdir: str | os.PathLike | None = None, plots: bool = True) -> ReportOutcome:
    """Report the sweep ``sweep`` (a sweep directory or a sweep name); a sweep run with ``--folds K`` also gets
    its cross-validation table (``cv_tables.md``, appended to ``markdown``).

    Results come from the sweep directory's ``results.csv`` when there is one, else from MLflow (``tracking_uri``,
    default ``sqlite:///<workdir>/mlflow.db``; experiment = sweep name). ``sync`` first uploads the buffered
    records of ``buffer_dir`` (default ``<sweep dir>/mlflow-buffer``). Tables and plots go to ``out`` (default:
    the sweep directory, or ``<workdir>/reports/<sweep>`` for a sweep read from MLflow)."""
    from orchestrator.report import write_plots, write_tables
    from orchestrator.report.cv import read_cv_results, write_cv_table

    work = Path(workdir or os.getcwd())
    sweep_dir = find_sweep_dir(sweep, storage, work)
    name = sweep_dir.name if sweep_dir else Path(sweep).name
    synced: list[str] = []
    kept: list[str] = []
    if sync:
        from orchestrator.tracking.sync import sync_buffers

        bdir = Path(buffer_dir) if buffer_dir else (sweep_dir or Path(sweep)) / BUFFER_DIRNAME
        done = sync_buffers(bdir, tracking_uri=tracking_uri)
        synced, kept = done.sent, done.kept
        if done.sweep_finished is False:
            kept.append("(the sweep's parent run)")
        if not (synced or kept):
            log.info("nothing buffered in %s", bdir)
    if sweep_dir is not None:
        results = pd.read_csv(sweep_dir / "results.csv")
        source = str(sweep_dir / "results.csv")
    else:
        from orchestrator.tracking.readback import results_frame
        from orchestrator.tracking.store import default_tracking_uri

        uri = tracking_uri or default_tracking_uri(work)
        db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if db is not None and not db.is_file():  # reading must not create an empty store
            looked = ", ".join(str(p) for p in _candidates(sweep, storage, work))
            raise MissingPathError(
                f"sweep {sweep!r} not found: no results.csv in {looked}, and no MLflow store at {db}; pass the "
                "sweep directory, --storage, or --tracking-uri of the store the sweep recorded into")
        results = results_frame(uri, name)
        source = f"mlflow:{uri}#{name}"
    if results.empty:
        raise ResultsError(f"sweep {sweep!r} has no results yet ({source}): run or resume it with `orch sweep`")
    out_dir = Path(out) if out else (sweep_dir or work / "reports" / name)
    paths = write_tables(results, out_dir)
    if plots:
        paths.update(write_plots(results, out_dir))
    markdown = paths["markdown"].read_text(encoding="utf-8")
    cv = read_cv_results(sweep_dir)  # a sweep run with --folds K: its cross-validation table follows
    if cv is not None:
        paths["cv_markdown"] = write_cv_table(cv, out_dir)
        markdown += "\n" + paths["cv_markdown"].read_text(encoding="utf-8")
    return ReportOutcome(source=source, markdown=markdown, paths=paths, synced=synced, still_buffered=kept)
