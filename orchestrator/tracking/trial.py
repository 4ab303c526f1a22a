"""One trial's child run: created once, reattached on resume, fed through the outage buffer.

Every write goes through ``_submit``: if earlier records still wait in the buffer they go first (order is kept);
if the store does not answer, the record joins the buffer and training goes on. Replays are idempotent: a
(metric, step) the run already holds is skipped, params already logged are compared, not re-sent.
"""

from __future__ import annotations

import logging
import numbers
import os
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag

from orchestrator import __version__
from orchestrator.results_schema import final_metric_key, mean_metric_key, mean_speeds
from orchestrator.tracking import store
from orchestrator.tracking.buffer import TrialBuffer, default_buffer_dir

log = logging.getLogger(__name__)

# Files of a finished trial's run_dir logged as artefacts: (file name, artefact sub-directory or None). Small files
# only: the checkpoint (best.pt, up to 270 MB) is recorded once the sweep ends (``SweepTracker.finish``), when the
# top-k is known and its location in the sweep storage too: by reference (the default) or as a copy.
RUN_DIR_ARTIFACTS = (
    ("learning_curve.png", None),
    ("overlay.png", None),
    ("per_patient_dice.csv", None),
    ("per_patient.csv", None),
    ("history.csv", None),
    ("result.json", None),
)
# While the store is down, the next try waits this long, doubling after each failed try up to the maximum: a host
# that drops packets costs a timeout per try (2 x MLFLOW_HTTP_REQUEST_TIMEOUT), not per epoch.
RETRY_INTERVAL_S = 20.0
MAX_RETRY_INTERVAL_S = 300.0
_MAX_PARAMS, _MAX_METRICS = 100, 1000  # MLflow's per-batch limits


def _param_value(v: Any) -> str:
    return str(v)[:6000]  # MLflow stores params as strings of at most 6000 characters


def _numbers(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):  # numpy scalars are Real too
            continue
        out[str(k)] = float(v)
    return out


def _files_source(run_dir: Path, recorded: str | None) -> Path:
    """Where a finished trial's small files are: its run directory, or, when a finish replayed late (``orch report
    --sync``) finds that node-local scratch gone, the storage copy the sweep's finish recorded (``orch.run_dir``)."""
    if not run_dir.is_dir() and recorded and "://" not in recorded and Path(recorded).is_dir():
        return Path(recorded)
    return run_dir


class TrialTracker:
    """The MLflow child run of one trial. Never raises into training: outages buffer, rejections warn.

    ``buffer_dir`` holds this trial's pending records (``<trial_id>.<parent run id>.jsonl``); pass the sweep's
    ``<sweep dir>/mlflow-buffer`` so that ``orch report SWEEP --sync`` finds what an outage left behind.
    """

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        parent_run_id: str,
        trial_id: str,
        buffer_dir: str | os.PathLike | None = None,
        sweep_name: str | None = None,
        retry_interval_s: float = RETRY_INTERVAL_S,
    ) -> None:
        self.uri = uri
        self.experiment_id = str(experiment_id)
        self.parent_run_id = str(parent_run_id)
        self.trial_id = str(trial_id)
        self.sweep_name = sweep_name
        self.buffer = TrialBuffer.for_trial(buffer_dir or default_buffer_dir(), self.trial_id, self.parent_run_id)
        self.run_id: str | None = None
        self._client = store.client(uri)
        self._params: dict[str, str] = {}  # what the run holds
        self._steps: dict[str, set[int]] = {}  # metric key -> steps the run holds
        self._retry_at = 0.0
        self.retry_interval_s = retry_interval_s
        self._backoff = retry_interval_s
        self._warned = False

    # ----- public API (the contract with the sweep) -----

    def start(self, params: dict) -> None:
        """Reattach to this trial's child run (or create it) and log ``params`` once."""
        self._submit({"op": "start", "params": {str(k): _param_value(v) for k, v in params.items()}})

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """Log one epoch's metrics at ``step=epoch``; a step the run already holds is not logged again."""
        rec = {"op": "epoch", "epoch": int(epoch), "metrics": _numbers(metrics), "ts": int(time.time() * 1000)}
        self._submit(rec)

    def finish(self, result: Any) -> bool:
        """Log the test metrics, the run_dir's small artefacts (plots, tables, result.json: not the checkpoint)
        and the final status of a ``TrainResult`` (or its dict). Returns True when everything reached the store,
        False when records wait in the buffer."""
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        data["run_dir"] = str(data.get("run_dir", ""))
        self._submit({"op": "finish", "result": data}, force=True)
        return not self.buffer

    def fail(self, error: str) -> None:
        """Mark the run FAILED (an exception ended the trial); a retried trial reattaches and sets it running."""
        self._submit({"op": "fail", "error": str(error)[:5000]}, force=True)

    def flush(self, force: bool = False) -> bool:
        """Send the buffered records; True when the buffer is empty afterwards."""
        if not self.buffer:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        _, records = self.buffer.read()
        self.run_id = None  # re-read the run: what did the store keep of the calls that "failed"?
        for rec in records:
            try:
                self._apply(rec)
            except Exception as e:  # noqa: BLE001 - never into training
                if store.is_outage(e):  # still down: keep them all (replays are idempotent)
                    self._postpone()
                    return False
                log.warning("trial %s: the tracking store rejected a buffered %s record (%s); dropped",
                            self.trial_id, rec["op"], e)
        self.buffer.clear()
        self._backoff = self.retry_interval_s
        log.warning("trial %s: tracking store %s is back; %d buffered records sent", self.trial_id, self.uri,
                    len(records))
        self._warned = False
        return True

    # ----- the write path -----

    @property
    def _header(self) -> dict:
        return {"uri": self.uri, "experiment_id": self.experiment_id, "parent_run_id": self.parent_run_id,
                "trial_id": self.trial_id, "sweep_name": self.sweep_name}

    def _submit(self, rec: dict, force: bool = False) -> None:
        if self.buffer and not self.flush(force=force):
            self._keep(rec)
            return
        try:
            self._apply(rec)
        except Exception as e:  # noqa: BLE001 - never into training
            if not store.is_outage(e):
                log.warning("trial %s: the tracking store rejected %s (%s); record dropped", self.trial_id,
                            rec["op"], e)
                return
            self._postpone()
            self._keep(rec, error=e)

    def _postpone(self) -> None:
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(2 * self._backoff, MAX_RETRY_INTERVAL_S)

    def _keep(self, rec: dict, error: BaseException | None = None) -> None:
        try:
            self.buffer.append(rec, self._header)
        except OSError as e:  # a full or read-only disk loses the record, never the training run
            log.error("trial %s: could not buffer a %s record in %s (%s); it is lost", self.trial_id, rec["op"],
                      self.buffer.path, e)
            return
        self._warn_buffered(final=rec["op"] in ("finish", "fail"), error=error)

    def _warn_buffered(self, final: bool, error: BaseException | None = None) -> None:
        if final:
            log.warning(
                "trial %s: tracking store %s unreachable at the end of the trial; its records are kept in %s: "
                "run `orch report SWEEP --sync` when the store is back to upload them",
                self.trial_id, self.uri, self.buffer.path)
        elif not self._warned:
            log.warning("trial %s: tracking store %s unreachable (%s); training continues, records are buffered "
                        "in %s and sent when it answers again", self.trial_id, self.uri,
                        str(error).splitlines()[0][:200] if error else "still down", self.buffer.path)
        self._warned = True

    def _apply(self, rec: dict) -> None:
        op = rec["op"]
        if op == "start":
            self._attach()
            self._log_params(rec["params"])
        elif op == "epoch":
            self._attach()
            self._log_metrics(rec["metrics"], step=rec["epoch"], ts=rec["ts"])
        elif op == "finish":
            self._attach()
            self._finish(rec["result"])
        elif op == "fail":
            self._attach()
            c, rid = self._client, self.run_id
            c.log_batch(rid, tags=[RunTag(store.TAG_STATUS, "failed"), RunTag("orch.error", rec["error"])])
            c.set_terminated(rid, RunStatus.to_string(RunStatus.FAILED))

    # ----- MLflow operations (each idempotent) -----

    def _attach(self) -> None:
        """Find this trial's child run (tags: parent run + trial id), or create it; load what it holds."""
        if self.run_id is not None:
            return
        c = self._client
        runs = store.find_runs(c, self.experiment_id, **{store.TAG_PARENT: self.parent_run_id,
                                                          store.TAG_TRIAL: self.trial_id})
        if runs:
            run = runs[0]
            if len(runs) > 1:
                log.warning("trial %s: %d child runs carry its id; using the oldest, %s", self.trial_id, len(runs),
                            run.info.run_id)
            if run.info.status != "RUNNING":
                c.update_run(run.info.run_id, status="RUNNING")
            self._params = dict(run.data.params)
            self._steps = {k: {m.step for m in c.get_metric_history(run.info.run_id, k)} for k in run.data.metrics}
        else:
            tags = {store.TAG_PARENT: self.parent_run_id, store.TAG_TRIAL: self.trial_id, store.TAG_ROLE: "trial",
                    store.TAG_VERSION: __version__}
            if self.sweep_name:
                tags[store.TAG_SWEEP] = self.sweep_name
            run = c.create_run(self.experiment_id, tags=tags, run_name=self.trial_id)
            self._params, self._steps = {}, {}
        self.run_id = run.info.run_id

    def _log_params(self, params: dict[str, str]) -> None:
        new = []
        for k, v in params.items():
            old = self._params.get(k)
            if old is None:
                new.append(Param(k, v))
            elif old != v:
                log.warning("trial %s: param %s=%r differs from the %r its run recorded first; keeping the first",
                            self.trial_id, k, v, old)
        for i in range(0, len(new), _MAX_PARAMS):
            self._client.log_batch(self.run_id, params=new[i : i + _MAX_PARAMS])
            self._params.update({p.key: p.value for p in new[i : i + _MAX_PARAMS]})

    def _log_metrics(self, metrics: dict[str, float], step: int, ts: int) -> None:
        todo = [Metric(k, v, ts, step) for k, v in metrics.items() if step not in self._steps.get(k, ())]
        for i in range(0, len(todo), _MAX_METRICS):
            self._client.log_batch(self.run_id, metrics=todo[i : i + _MAX_METRICS])
            for m in todo[i : i + _MAX_METRICS]:
                self._steps.setdefault(m.key, set()).add(step)

    def _log_run_dir(self, run_dir: Path) -> None:
        """Log the ``RUN_DIR_ARTIFACTS`` that ``run_dir`` holds; warn about the others."""
        missing = []
        for name, sub in RUN_DIR_ARTIFACTS:
            if (run_dir / name).is_file():
                self._client.log_artifact(self.run_id, str(run_dir / name), sub)
            else:
                missing.append(name)
        if missing:
            log.warning("trial %s: %s not in %s; not logged", self.trial_id, ", ".join(missing), run_dir)

    def _finish(self, res: dict) -> None:
        ts = int(time.time() * 1000)
        # Epochs the loop finished while no one was listening (a crash between checkpoint and log): backfill.
        for row in res.get("history", []):
            if "epoch" in row:
                self._log_metrics(_numbers({k: v for k, v in row.items() if k != "epoch"}), int(row["epoch"]), ts)
        final = {final_metric_key(k): v for k, v in _numbers(res.get("test", {})).items()}
        final.update({mean_metric_key(k): v for k, v in mean_speeds(res.get("history", [])).items()})
        for key in ("best_epoch", "epochs_completed"):
            if isinstance(res.get(key), (int, float)):
                final[key] = float(res[key])
        self._log_metrics(final, step=0, ts=ts)
        held = self._client.get_run(self.run_id).data.tags
        run_dir = Path(res.get("run_dir") or ".")
        self._log_run_dir(_files_source(run_dir, held.get(store.TAG_RUN_DIR)))
        tags = [RunTag(store.TAG_STATUS, str(res.get("status", "finished")))]
        # Where it trained, unless the sweep's finish already recorded the storage copy (a finish replayed late by
        # `orch report --sync` must not point the run back at a scratch directory that no longer exists).
        if store.TAG_CHECKPOINT not in held and store.TAG_CHECKPOINT_PRUNED not in held:
            tags.append(RunTag(store.TAG_RUN_DIR, str(run_dir.resolve())))
        self._client.log_batch(self.run_id, tags=tags)
        self._client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FINISHED))
