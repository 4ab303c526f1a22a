"""The sweep's parent run: the experiment and the parent are created once, by the driver, and found again (by the
``orch.sweep`` tag) when a sweep resumes. Trials only receive the two ids."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from mlflow.entities import Param, RunStatus, RunTag

from orchestrator import __version__
from orchestrator.files import atomic_write_text
from orchestrator.results_schema import BUFFER_DIRNAME, HAS_RESULT, PER_PATIENT_CSV, RESULTS_CSV
from orchestrator.tracking import store

log = logging.getLogger(__name__)

WAIT_ENV = "ORCH_TRACKING_WAIT"  # seconds a sweep waits for a tracking server that does not answer yet


def _wait_s() -> float:
    """``$ORCH_TRACKING_WAIT`` (default 60) as seconds; a value that is no number of seconds is refused, named."""
    raw = os.environ.get(WAIT_ENV, "60")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise store.TrackingError(f"{WAIT_ENV}={raw!r} is not a number of seconds >= 0: unset it (default 60) or set "
                                  "it to the seconds a sweep waits for its tracking server")
    return seconds


# Files of the sweep directory logged on the parent run under report/, at their relative paths (written by the
# sweep before it finishes: results.csv, the report's tables and plots, the per-patient table and its statistics,
# and for `orch sweep --folds K` the cv files).
SWEEP_ARTIFACT_GLOBS = ("results.csv", "paper_tables.*", "plot_*.png", "cv_results.csv", "cv/*/cv_per_patient.csv",
                        "cv/*/cv_summary.json", "cv/*/cv_dice.png",
                        "per_patient.csv", "stats_*.csv", "stats.md", "plot_stats_ci.png", "plot_rank_stability.png",
                        "plot_factor_*.png", "screening.md", "screening_rungs.csv", "screening_history.csv",
                        # orch train --folds K: its run directory is the "sweep" (tracking/train.py)
                        "cv_per_patient.csv", "cv_summary.json", "cv_dice.png")
SWEEP_PENDING = "sweep-pending.json"  # in the buffer dir: a parent run whose finish waits for the store


def git_commit(path: str | os.PathLike | None = None) -> str:
    """The commit of the checkout holding ``path`` (default: this package), ``-dirty`` appended when it has
    uncommitted changes; "unknown" outside git."""
    where = Path(path or Path(__file__).parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def utc_timestamp() -> str:
    """Now as ISO-8601 UTC with microseconds: ``2026-12-03T04:09:59.442582Z`` (``datetime.fromisoformat`` reads it)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class SweepTracker:
    """The MLflow experiment and parent run of one sweep (driver side). Build it with ``SweepTracker.open``."""

    uri: str
    experiment_id: str
    parent_run_id: str
    sweep_name: str

    @classmethod
    def open(cls, uri: str, experiment: str, sweep_name: str | None = None, tags: dict | None = None,
             params: dict | None = None, data: str | os.PathLike | None = None) -> "SweepTracker":
        """Create the experiment and the parent run, or reattach to them (a resumed sweep).

        ``tags`` (grid, data manifest sha256, ...) are set every time; ``params`` (the grid's axes) are logged
        once: a value that differs from the first one is kept as first recorded, with a warning. The parent
        always gets ``orch.sweep``, ``orch.role=sweep``, ``orch.version`` and ``orch.git_commit`` (unless given),
        and ``orch.data_manifest_sha256`` when ``data`` is a local prepared directory.
        Raises ``TrackingError`` when the store does not answer: better to stop before 45 trials start."""
        sweep_name = sweep_name or experiment
        tags = dict(tags or {})
        manifest = Path(data) / "manifest.json" if data and "://" not in str(data) else None
        if manifest is not None and manifest.is_file():
            tags.setdefault("orch.data_manifest_sha256", hashlib.sha256(manifest.read_bytes()).hexdigest())
        c = store.client(uri)
        # A server that is still starting (a job submitted right after `ray up`) gets ORCH_TRACKING_WAIT seconds
        # (default 60) to answer; a SQLite store answers at once or never.
        deadline = time.monotonic() + (_wait_s() if store.is_remote(uri) else 0)
        while True:
            try:
                return cls._open(c, uri, experiment, sweep_name, tags, params or {})
            except Exception as e:
                if not store.is_outage(e):
                    raise
                if time.monotonic() < deadline:
                    log.warning("waiting for the MLflow server at %s to answer (%.0f s left)", uri,
                                deadline - time.monotonic())
                    time.sleep(5)
                    continue
                raise store.TrackingError(
                    f"the MLflow tracking store {uri} does not answer ({str(e).splitlines()[0][:200]}): start the "
                    "server (mlflow server --backend-store-uri ... --host ... --port ...) or pass a reachable "
                    f"--tracking-uri (a server gets {WAIT_ENV} seconds, default 60, to start answering); the "
                    "default is sqlite:///<workdir>/mlflow.db"
                ) from e

    @classmethod
    def _open(cls, c, uri, experiment, sweep_name, tags, params) -> "SweepTracker":
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            try:
                eid = c.create_experiment(experiment, artifact_location=store.sqlite_artifact_root(uri),
                                          tags={store.TAG_SWEEP: sweep_name})
            except Exception as e:  # another driver won the race: use its experiment
                exp = c.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                eid = exp.experiment_id
                log.debug("experiment %s created concurrently (%s)", experiment, e)
        else:
            eid = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                c.restore_experiment(eid)
                log.warning("experiment %r was deleted in MLflow; restored it to record the sweep", experiment)
        parents = store.find_runs(c, eid, **{store.TAG_SWEEP: sweep_name, store.TAG_ROLE: "sweep"})
        if parents:
            run = parents[0]
            if run.info.status != "RUNNING":
                c.update_run(run.info.run_id, status="RUNNING")
            log.info("reattached to the parent run %s of sweep %s", run.info.run_id, sweep_name)
        else:
            run = c.create_run(eid, run_name=sweep_name, tags={store.TAG_SWEEP: sweep_name, store.TAG_ROLE: "sweep"})
            log.info("created the parent run %s of sweep %s in experiment %s", run.info.run_id, sweep_name, eid)
        rid = run.info.run_id
        # orch.opened_at: when a driver last (re)attached, so a reader can tell a resumed sweep from a stale one.
        opened = utc_timestamp()
        all_tags = {store.TAG_VERSION: __version__, "orch.git_commit": git_commit(), "orch.opened_at": opened,
                    **tags}
        c.log_batch(rid, tags=[RunTag(str(k), str(v)) for k, v in all_tags.items()])
        held = dict(run.data.params)
        new = []
        for k, v in params.items():
            v = str(v)[:6000]
            if k not in held:
                new.append(Param(str(k), v))
            elif held[k] != v:
                log.warning("sweep %s: param %s=%r differs from the %r recorded when it started; keeping the first",
                            sweep_name, k, v, held[k])
        for i in range(0, len(new), 100):
            c.log_batch(rid, params=new[i : i + 100])
        return cls(uri=uri, experiment_id=str(eid), parent_run_id=str(rid), sweep_name=sweep_name)

    def trial(self, trial_id: str, buffer_dir: str | os.PathLike | None = None):
        """A ``TrialTracker`` for ``trial_id`` under this sweep (the same one a trial process builds from ids)."""
        from orchestrator.tracking.trial import TrialTracker

        return TrialTracker(self.uri, self.experiment_id, self.parent_run_id, trial_id, buffer_dir=buffer_dir,
                            sweep_name=self.sweep_name)

    def finish(self, results_dir: str | os.PathLike, top_k: int = 3, status: str = "FINISHED",
               buffer_dir: str | os.PathLike | None = None, log_checkpoints: str = "reference",
               checkpoints: dict[str, str] | None = None, pruned: dict[str, str] | None = None,
               results: pd.DataFrame | None = None) -> bool:
        """Upload the report files the sweep wrote into ``results_dir`` (``SWEEP_ARTIFACT_GLOBS``: results.csv,
        tables, plots, cross-validation files; only those that exist: nothing is written here), record where each
        finished trial's checkpoint is, log the top ``top_k`` trials by test ``dice_volume_mean`` as MLflow
        models, and end the parent run.

        ``results``: the sweep's results.csv rows, as the caller holds them (default: read from ``results_dir``,
        when it holds a results.csv). Checkpoints: ``checkpoints`` maps trial id -> its kept best.pt (path or URI
        in the sweep storage; default: best.pt in the ``run_dir`` of results.csv, where that file exists);
        ``pruned`` maps trial id -> why it kept none. Each run gets the tag ``orch.checkpoint`` (or
        ``orch.checkpoint_pruned``) and ``orch.run_dir`` (its directory in the storage);
        ``log_checkpoints="copy"`` also uploads the kept files as artefacts and logs self-contained models (see
        ``TrackingConfig.log_checkpoints``).

        Never raises: when the store does not answer it returns False, and the pending finish is recorded in
        ``buffer_dir`` (default ``<results_dir>/mlflow-buffer``) for ``orch report SWEEP --sync``."""
        results_dir = Path(results_dir)
        pending = Path(buffer_dir or results_dir / BUFFER_DIRNAME) / SWEEP_PENDING
        c = store.client(self.uri)
        try:
            self._upload_report(c, results_dir)
            if results is None and (results_dir / RESULTS_CSV).is_file():
                results = pd.read_csv(results_dir / RESULTS_CSV)
            if results is not None:
                self._record_trials(c, results, top_k, log_checkpoints, checkpoints, pruned or {})
            c.log_batch(self.parent_run_id, tags=[RunTag(store.TAG_STATUS, status.lower())])
            c.set_terminated(self.parent_run_id, RunStatus.to_string(RunStatus.from_string(status)))
        except Exception as e:  # noqa: BLE001 - the sweep itself is done; say what is missing
            record = {**asdict(self), "results_dir": str(results_dir.resolve()), "top_k": top_k, "status": status,
                      "log_checkpoints": log_checkpoints, "checkpoints": checkpoints, "pruned": pruned}
            atomic_write_text(pending, json.dumps(record, indent=1))
            log.warning("sweep %s: could not finish the parent run %s in %s (%s); recorded in %s: run "
                        "`orch report %s --sync` when the store answers", self.sweep_name, self.parent_run_id,
                        self.uri, str(e).splitlines()[0][:200], pending, results_dir)
            return False
        pending.unlink(missing_ok=True)
        return True

    def _upload_report(self, c, results_dir: Path) -> None:
        """Log the report files of ``results_dir`` that exist on the parent run: ``report/`` and, for the files of
        ``cv/<config id>/``, ``report/cv/<config id>/``."""
        files = sorted({p for g in SWEEP_ARTIFACT_GLOBS for p in results_dir.glob(g) if p.is_file()})
        if not (results_dir / RESULTS_CSV).is_file():  # an `orch train` run directory: its per_patient.csv is the
            files = [p for p in files if p.name != PER_PATIENT_CSV]  # run's own, logged on its child run
        for p in files:
            where = Path("report") / p.parent.relative_to(results_dir)
            c.log_artifact(self.parent_run_id, str(p), where.as_posix())

    def _record_trials(self, c, results: pd.DataFrame, top_k: int, mode: str, checkpoints: dict[str, str] | None,
                       pruned: dict[str, str]) -> None:
        """What only the driver knows of the trials once the sweep is over: which failed for good, where each
        checkpoint is kept, which trials are the top-k models."""
        self._mark_failed(c, results)
        self._mark_stopped(c, results)
        kept = self._record_checkpoints(c, results, mode, checkpoints, pruned)
        if top_k > 0:
            self._log_models(results, top_k, mode, kept)

    @classmethod
    def finish_pending(cls, pending: str | os.PathLike, tracking_uri: str | None = None) -> bool:
        """Retry a finish that an outage interrupted (the ``sweep-pending.json`` that ``finish`` wrote)."""
        rec = json.loads(Path(pending).read_text())
        st = cls(uri=tracking_uri or rec["uri"], experiment_id=rec["experiment_id"],
                 parent_run_id=rec["parent_run_id"], sweep_name=rec["sweep_name"])
        return st.finish(rec["results_dir"], top_k=rec["top_k"], status=rec["status"],
                         buffer_dir=Path(pending).parent, log_checkpoints=rec.get("log_checkpoints", "reference"),
                         checkpoints=rec.get("checkpoints"), pruned=rec.get("pruned"))

    def _mark_stopped(self, c, results: pd.DataFrame) -> None:
        """Child runs of trials the scheduler stopped (``--scheduler asha``) end KILLED with ``orch.status=
        stopped_early`` and ``orch.stopped_epoch``: Tune ended the trial process mid-run, before it could say so.
        A result, not a failure (never FAILED). Idempotent."""
        if "status" not in results.columns or "stopped_epoch" not in results.columns:
            return
        children = store.children_by_trial(c, self.experiment_id, self.parent_run_id)
        for _, row in results[results["status"] == "stopped_early"].iterrows():
            run = children.get(str(row["trial_id"]))
            if run is None:
                continue
            tags = [RunTag(store.TAG_STATUS, "stopped_early"),
                    RunTag("orch.stopped_epoch", str(int(row["stopped_epoch"])))]
            if isinstance(row.get("run_dir"), str) and row["run_dir"]:
                tags.append(RunTag(store.TAG_RUN_DIR, row["run_dir"]))
            c.log_batch(run.info.run_id, tags=tags)
            if run.info.status != "KILLED":
                c.set_terminated(run.info.run_id, "KILLED")

    def _mark_failed(self, c, results: pd.DataFrame) -> None:
        """Child runs of trials that ended in error (retries exhausted) are FAILED, with the error as a tag: the
        trial process died before it could say so itself."""
        if "status" not in results.columns:
            return
        for _, row in results[results["status"] == "error"].iterrows():
            runs = store.find_runs(c, self.experiment_id, **{store.TAG_PARENT: self.parent_run_id,
                                                              store.TAG_TRIAL: str(row["trial_id"])})
            for run in runs:
                if run.info.status == "FAILED":
                    continue
                error = str(row.get("error", "") if pd.notna(row.get("error", None)) else "")[:5000]
                c.log_batch(run.info.run_id, tags=[RunTag(store.TAG_STATUS, "failed"), RunTag("orch.error", error)])
                c.set_terminated(run.info.run_id, "FAILED")

    def _record_checkpoints(self, c, results: pd.DataFrame, mode: str, checkpoints: dict[str, str] | None,
                            pruned: dict[str, str]) -> dict[str, str]:
        """Tag every finished (or diverged) trial's run with where its checkpoint is, or why it has none; with
        ``mode="copy"`` upload the kept ones too. Returns trial id -> kept location. Idempotent."""
        if "trial_id" not in results.columns or "status" not in results.columns:
            return {}
        children = store.children_by_trial(c, self.experiment_id, self.parent_run_id)
        kept: dict[str, str] = {}
        for _, row in results[results["status"].isin(HAS_RESULT)].iterrows():
            tid, run = str(row["trial_id"]), children.get(str(row["trial_id"]))
            if run is None:
                continue
            run_dir = row.get("run_dir") if isinstance(row.get("run_dir"), str) else None
            if checkpoints is not None:
                loc = checkpoints.get(tid)
            else:  # a caller without the sweep's own list: what exists in the run directory of results.csv
                loc = str(Path(run_dir) / "best.pt") if run_dir and (Path(run_dir) / "best.pt").is_file() else None
            tags = [RunTag(store.TAG_RUN_DIR, run_dir)] if run_dir else []
            if loc:
                kept[tid] = loc
                tags.append(RunTag(store.TAG_CHECKPOINT, loc))
                if mode == "copy":
                    _upload_checkpoint(c, run.info.run_id, loc)
            else:
                if store.TAG_CHECKPOINT in run.data.tags:  # a rerun with a smaller --keep-checkpoints
                    c.delete_tag(run.info.run_id, store.TAG_CHECKPOINT)
                if tid in pruned:
                    tags.append(RunTag(store.TAG_CHECKPOINT_PRUNED, pruned[tid]))
            if tags:
                c.log_batch(run.info.run_id, tags=tags)
        return kept

    def _log_models(self, results: pd.DataFrame, top_k: int, mode: str, kept: dict[str, str]) -> None:
        """Log the top ``top_k`` trials as models and register them as ``<sweep>-best`` (aliases ``champion``,
        ``rank-2``...: ``models.register_top_models``)."""
        from orchestrator.tracking.models import log_top_models, register_top_models

        try:
            top = log_top_models(self, results, top_k, mode=mode, locations=kept)
            register_top_models(self.uri, self.sweep_name, top)
        except Exception as e:
            if store.is_outage(e):
                raise
            # A model that cannot be rebuilt, serialised or registered costs the model, not the sweep's record.
            log.warning("sweep %s: the top-%d models were not logged or registered: %s", self.sweep_name, top_k, e)


def _upload_checkpoint(c, run_id: str, location: str) -> None:
    """Copy a kept checkpoint into the run's artefacts (``checkpoints/best.pt``) unless it is there already."""
    from orchestrator.tracking.reference import fetch_checkpoint

    if any(a.path == "checkpoints/best.pt" for a in c.list_artifacts(run_id, "checkpoints")):
        return
    c.log_artifact(run_id, str(fetch_checkpoint(location)), "checkpoints")

