"""A sweep's results read back from MLflow, in the columns of the sweep directory's ``results.csv``, and its
per-patient table (``per_patient.csv``, the statistics' input) from the files its parent run holds."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from orchestrator import results_schema as schema
from orchestrator.errors import MissingPathError
from orchestrator.results_schema import PER_PATIENT_CSV
from orchestrator.tracking import store

log = logging.getLogger(__name__)

# Where the sweep's parent run holds the report files of its directory (tracking/sweep.py: SWEEP_ARTIFACT_GLOBS).
PER_PATIENT_ARTIFACT_DIR = "report"


def results_frame(uri: str, sweep_name: str, experiment: str | None = None) -> pd.DataFrame:
    """One row per child run of sweep ``sweep_name`` (experiment ``experiment``, default the sweep name):
    the configuration columns, status, epochs_completed, best_epoch, ``test_<metric>``, it_per_s, img_per_s
    (means over epochs), run_id, run_dir.
    Raises ``MissingPathError`` when a SQLite store does not exist (reading must not create an empty one),
    ``TrackingError`` when the store has no such experiment or sweep."""
    c, exp, parent = _parent_run(uri, sweep_name, experiment)
    rows = [_row(run) for run in store.find_runs(c, exp.experiment_id, **{store.TAG_PARENT: parent.info.run_id})]
    if not rows:
        log.warning("sweep %s in %s has a parent run but no trial runs yet", sweep_name, uri)
    return pd.DataFrame(rows, columns=None if rows else ["trial_id", "encoder", "optimizer", "lr", "status"])


def per_patient_frame(uri: str, sweep_name: str, experiment: str | None = None) -> pd.DataFrame | None:
    """The sweep's per-patient table (``per_patient.csv``, what its statistics are computed from) as the sweep's
    parent run holds it (``report/per_patient.csv``, logged when the sweep ended); None when the parent run has
    none (a sweep still running, one an older orch ran, or one whose finish waits in its buffer). Raises like
    ``results_frame``."""
    c, _, parent = _parent_run(uri, sweep_name, experiment)
    where = f"{PER_PATIENT_ARTIFACT_DIR}/{PER_PATIENT_CSV}"
    if PER_PATIENT_CSV not in {Path(a.path).name for a in c.list_artifacts(parent.info.run_id,
                                                                             PER_PATIENT_ARTIFACT_DIR)}:
        log.info("sweep %s in %s: its parent run holds no %s", sweep_name, uri, where)
        return None
    with tempfile.TemporaryDirectory(prefix="orch-readback-") as tmp:
        path = c.download_artifacts(parent.info.run_id, where, tmp)
        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()


def _parent_run(uri: str, sweep_name: str, experiment: str | None):
    """(client, experiment, parent run) of sweep ``sweep_name``; MissingPathError / TrackingError as
    ``results_frame`` says."""
    _require_store(uri)
    c = store.client(uri)
    exp = c.get_experiment_by_name(experiment or sweep_name)
    if exp is None:
        raise store.TrackingError(
            f"no MLflow experiment {experiment or sweep_name!r} in {uri}: check the sweep name, or pass "
            "--tracking-uri (the default is sqlite:///<current dir>/mlflow.db) or the sweep directory")
    parents = store.find_runs(c, exp.experiment_id, **{store.TAG_SWEEP: sweep_name, store.TAG_ROLE: "sweep"})
    if not parents:
        raise store.TrackingError(f"experiment {exp.name!r} in {uri} has no parent run of sweep {sweep_name!r}")
    return c, exp, parents[0]


def _require_store(uri: str) -> None:
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if db is not None and not db.is_file():
        raise MissingPathError(f"no MLflow store at {db}")


def _row(run) -> dict:
    """The results.csv row of one child run."""
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    row = {"trial_id": t.get(store.TAG_TRIAL, run.info.run_name), **schema.parse_config(p)}
    status = t.get(store.TAG_STATUS)
    if status is None:
        status = {"RUNNING": "unfinished", "FAILED": "error"}.get(run.info.status, run.info.status.lower())
    row["status"] = status
    for k in ("epochs_completed", "best_epoch"):
        row[k] = int(m[k]) if k in m else None
    row.update({k: v for k, v in m.items() if k.startswith("test_")})
    row.update({k: m.get(schema.mean_metric_key(k)) for k in schema.SPEED_KEYS})
    row["run_id"] = run.info.run_id
    row["run_dir"] = t.get(store.TAG_RUN_DIR)
    stopped = t.get("orch.stopped_epoch")  # --scheduler asha: tagged by the driver when the sweep ends
    row["stopped_epoch"] = int(stopped) if stopped not in (None, "") else None
    return row
