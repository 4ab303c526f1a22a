"""A sweep's results read back from MLflow, in the columns of the sweep directory's ``results.csv``."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from orchestrator import results_schema as schema
from orchestrator.errors import MissingPathError
from orchestrator.tracking import store

log = logging.getLogger(__name__)


def results_frame(uri: str, sweep_name: str, experiment: str | None = None) -> pd.DataFrame:
    """One row per child run of sweep ``sweep_name`` (experiment ``experiment``, default the sweep name):
    the configuration columns, status, epochs_completed, best_epoch, ``test_<metric>``, it_per_s, img_per_s
    (means over epochs), run_id, run_dir.
    Raises ``MissingPathError`` when a SQLite store does not exist (reading must not create an empty one),
    ``TrackingError`` when the store has no such experiment or sweep."""
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
    rows = [_row(run) for run in store.find_runs(c, exp.experiment_id, **{store.TAG_PARENT: parents[0].info.run_id})]
    if not rows:
        log.warning("sweep %s in %s has a parent run but no trial runs yet", sweep_name, uri)
    return pd.DataFrame(rows, columns=None if rows else ["trial_id", "encoder", "optimizer", "lr", "status"])


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
