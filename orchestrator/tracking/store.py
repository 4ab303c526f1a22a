"""The MLflow client side shared by the sweep and trial trackers: store URIs, client creation, tag names, and
the line between an outage (buffer and retry later) and a real error (warn and drop).

Tag vocabulary (what the UI and ``orch report`` search by)::

    orch.sweep     sweep name           on the parent run and every child run
    orch.role      "sweep" | "trial"    parent or child
    orch.trial_id  trial id             child runs only; with mlflow.parentRunId it identifies the child
    orch.status    finished | diverged | failed
    orch.run_dir   the trial's run directory: where it trained, then (once the sweep ends) its directory in the
                   sweep storage (best.pt if kept, plots, result.json)
    orch.checkpoint           where the trial's best.pt is (a path or URI in the sweep storage): MLflow's
                              reference to the one copy of the weights; absent once pruned
    orch.checkpoint_pruned    why a finished trial has no checkpoint (outside the sweep's --keep-checkpoints)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Keep MLflow's own HTTP retries short: with the defaults (7 retries, backoff factor 2, 120 s timeout) one call
# to an unreachable server blocks a training loop for minutes. Our buffer does the retrying instead. Set before
# mlflow reads them; a user's own values win.
_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
for _k, _v in _HTTP_ENV.items():
    os.environ.setdefault(_k, _v)

from mlflow.exceptions import MlflowException  # noqa: E402  (after the environment above)
from mlflow.tracking import MlflowClient  # noqa: E402

from orchestrator.errors import UserError  # noqa: E402

log = logging.getLogger(__name__)

TAG_SWEEP = "orch.sweep"
TAG_ROLE = "orch.role"
TAG_TRIAL = "orch.trial_id"
TAG_STATUS = "orch.status"
TAG_RUN_DIR = "orch.run_dir"
TAG_CHECKPOINT = "orch.checkpoint"
TAG_CHECKPOINT_PRUNED = "orch.checkpoint_pruned"
TAG_VERSION = "orch.version"
TAG_PARENT = "mlflow.parentRunId"

DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"

# MLflow error codes that mean "the request itself is wrong": retrying cannot help, so these are not outages.
_PERMANENT_CODES = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE",
    "BAD_REQUEST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "MALFORMED_REQUEST",
}


class TrackingError(UserError, RuntimeError):
    """A tracking problem a user can act on (the message names the store and what to do)."""


def default_tracking_uri(workdir: str | os.PathLike | None = None) -> str:
    """The default store of a working directory: ``sqlite:///<abs workdir>/mlflow.db``."""
    return f"sqlite:///{(Path(workdir or os.getcwd()).resolve() / DB_NAME).as_posix()}"


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_uri(uri: str) -> str:
    """Refuse the stores orch does not use: the deprecated ``./mlruns`` file store and unknown schemes."""
    if uri.startswith(("sqlite:///", "http://", "https://", "postgresql", "mysql")):
        return uri
    raise TrackingError(
        f"tracking URI {uri!r} is not supported: use sqlite:///<workdir>/{DB_NAME} (the default) or the "
        "http://host:port of an `mlflow server`; the ./mlruns file store is deprecated and refused by MLflow 3.13+"
    )


def sqlite_artifact_root(uri: str) -> str | None:
    """For a SQLite store, artefacts live beside the database (``<dir>/mlartifacts``), not in ./mlruns of
    whatever directory a process happens to run in. None for other stores (the server decides)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    return (db.parent / ARTIFACTS_NAME).resolve().as_uri()


def client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=check_uri(uri))


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means "the store is not answering right now" (connection refused, timeout, 5xx,
    a locked SQLite file): the record should wait in the buffer. False for requests the store rejected."""
    if isinstance(exc, MlflowException):
        return exc.error_code not in _PERMANENT_CODES
    return isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.startswith(
        ("requests", "urllib3", "sqlalchemy"))


def quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_runs(c: MlflowClient, experiment_id: str, **tags: str) -> list:
    """Runs of ``experiment_id`` whose tags equal ``tags`` (names with dots allowed), oldest first."""
    flt = " AND ".join(f"tags.`{k}` = {quote(v)}" for k, v in tags.items())
    runs = c.search_runs([experiment_id], filter_string=flt, max_results=1000, order_by=["attributes.start_time ASC"])
    return list(runs)


def children_by_trial(c: MlflowClient, experiment_id: str, parent_run_id: str) -> dict:
    """The child runs of a sweep's parent by trial id (one search); the oldest one where a trial has several, as
    ``TrialTracker`` reattaches to it."""
    out: dict = {}
    for run in find_runs(c, experiment_id, **{TAG_PARENT: parent_run_id}):
        out.setdefault(run.data.tags.get(TAG_TRIAL), run)
    return out

