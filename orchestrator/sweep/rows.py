"""The sweep's result rows: what a trial reports to Tune and how ``results.csv`` is built from Tune's results.

Every trial reports two kinds of results: after each epoch (``epoch_metrics``, ``final=False``) and once after
training (``final_metrics``, ``final=True``: the row of ``results.csv``). A trial that diverged is a result with
``status="diverged"``; only a trial whose process kept failing is ``"error"``. (Not ``done``: Tune reads a
``done`` metric as "stop this trial now", which kills a Ray Train trial before its trainer has shut down.)

A trial that a scheduler stopped (``orch sweep --scheduler asha``) never sends its final result: its last result is
an epoch's, which Tune marked ``done``. It is a result, not a failure: ``status="stopped_early"``, ``stopped_epoch``
the epoch it reached, the validation metrics it last reported, no test metrics (it was never tested). Every report
carries each ``val_<metric>`` (NaN where the loop has none): Tune rejects a result that lacks the scheduler's metric.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator import results_schema as schema
from orchestrator.files import atomic_write
from orchestrator.report.screening import STOPPED_EARLY, STOPPED_EPOCH
from orchestrator.sweep.plan import TrialPlan

log = logging.getLogger(__name__)


def epoch_metrics(report) -> dict[str, Any]:
    """Tune metrics of one epoch (an ``EpochReport`` of the training loop)."""
    out: dict[str, Any] = {k: float(v) for k, v in report.metrics.items() if schema.is_number(v)}
    out.update(epoch=int(report.epoch), status=str(report.status), is_best=bool(report.is_best), final=False)
    return out | _val_metrics(report.metrics)


def _val_metrics(values: dict[str, Any]) -> dict[str, float]:
    """Every ``val_<metric>`` of results.csv from one epoch's (or the best epoch's) metrics, NaN where missing (a
    diverged epoch is not validated): a scheduler may rank trials by any of them, on every report."""
    return {schema.metric_key("val", m): float(values[m]) if schema.is_number(values.get(m)) else math.nan
            for m in schema.metric_names()}


def final_metrics(result, plan: TrialPlan) -> dict[str, Any]:
    """The ``results.csv`` row of a finished (or diverged) trial, from its ``TrainResult`` (``run_dir`` is added
    by the driver: the path of the trial's final checkpoint in storage)."""
    row: dict[str, Any] = {**_config_row(plan), "status": result.status,
                           "epochs_completed": int(result.epochs_completed),
                           "best_epoch": int(result.best_epoch) if result.best_epoch else 0, "final": True,
                           **_val_metrics(result.best_val or {})}
    metrics = schema.metric_names()
    for prefix, values in (("val", result.best_val or {}), ("test", result.test or {})):
        for name, v in values.items():
            if name in metrics or name.startswith(f"{prefix}_"):  # train figures (loss, it/s) of best_val: below
                if schema.is_number(v):
                    row[schema.metric_key(prefix, name)] = float(v)
    if schema.is_number((result.best_val or {}).get("loss")):
        row["train_loss"] = float(result.best_val["loss"])
    row.update(schema.mean_speeds(result.history))
    return row


def _config_row(plan: TrialPlan) -> dict[str, Any]:
    """The configuration columns of a planned trial, and the resources it ran with."""
    return {**schema.config_row(plan.trial_id, plan.config), "gpus": plan.gpus, "workers": plan.workers}


def collect_rows(result_grid, plans: list[TrialPlan]) -> pd.DataFrame:
    """One row per planned configuration (grid order kept), whatever state its trial ended in.

    ``result_grid`` is Tune's ``ResultGrid``; a trial missing from it (never started) is ``"pending"``.
    """
    by_id: dict[str, Any] = {}
    for res in result_grid:
        spec = (res.config or {}).get("trial") or {}
        if "trial_id" in spec:
            by_id[spec["trial_id"]] = res
    columns = schema.results_columns()
    df = pd.DataFrame([trial_row(by_id.get(plan.trial_id), plan, columns) for plan in plans])
    for col in columns:
        if col not in df.columns:
            df[col] = None
    return df[list(columns)]


def trial_row(res, plan: TrialPlan, columns: tuple[str, ...]) -> dict[str, Any]:
    """The results.csv row of one planned trial from its Tune ``Result`` (None: never started): its final result,
    or how it ended without one (stopped by the scheduler, errored, unfinished)."""
    base = _config_row(plan)
    if res is None:
        return {**base, "status": "pending"}
    metrics = dict(res.metrics or {})
    if metrics.get("final"):
        # Tune adds its own "trial_id" to every result: the configuration columns come from the plan.
        row = {**{k: v for k, v in metrics.items() if k in columns}, **base}
        # The final checkpoint holds the complete run directory (Ray Train path: reported as a path).
        if res.checkpoint is not None:
            row["run_dir"] = res.checkpoint.path
        elif metrics.get("checkpoint_path"):
            row["run_dir"] = metrics["checkpoint_path"]
    elif metrics.get("done") and not res.error:
        row = {**base, **stopped_row(metrics, _epoch_records(res))}
        if res.checkpoint is not None:  # the run directory at the epoch it stopped (last.pt: it could continue)
            row["run_dir"] = res.checkpoint.path
    else:
        row = {**base, "status": "error" if res.error else "unfinished",
               "epochs_completed": int(metrics.get("epoch", 0) or 0)}
    if res.error:
        row["status"] = "error"
        row["error"] = str(res.error).strip().splitlines()[-1][:300] if str(res.error).strip() else "error"
    return row


def stopped_row(last: dict[str, Any], epochs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The result columns of a trial a scheduler stopped, from its last (epoch) result ``last`` and, when Tune kept
    them, all its epoch results ``epochs`` (for the mean speeds): the validation metrics it last reported."""
    epoch = int(last.get("epoch", 0) or 0)
    row: dict[str, Any] = {"status": STOPPED_EARLY, STOPPED_EPOCH: epoch, "epochs_completed": epoch}
    row.update({k: float(v) for k, v in last.items() if k.startswith("val_") and schema.is_number(v)})
    if schema.is_number(last.get("loss")):
        row["train_loss"] = float(last["loss"])
    row.update(schema.mean_speeds(epochs if epochs else [last]))
    return row


def _epoch_records(res) -> list[dict[str, Any]]:
    """The epoch results Tune kept of a trial (its ``metrics_dataframe``), oldest first; [] when it has none."""
    frame = getattr(res, "metrics_dataframe", None)
    if frame is None or not len(frame) or "epoch" not in frame.columns:
        return []
    return [r for r in frame.to_dict("records") if r.get("final") not in (True, 1.0)]


def write_results(df: pd.DataFrame, sweep_dir: str | os.PathLike) -> Path:
    """Write ``results.csv`` atomically into a local sweep directory."""
    out = Path(sweep_dir) / schema.RESULTS_CSV
    atomic_write(out, lambda tmp: df.to_csv(tmp, index=False))
    return out


def status_counts(df: pd.DataFrame) -> dict[str, int]:
    """``{"finished": 40, "diverged": 5, "stopped_early": 3, ...}`` in a stable order."""
    order = ["finished", "diverged", STOPPED_EARLY, "error", "unfinished", "pending"]
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    return {k: int(counts[k]) for k in order if k in counts} | {
        k: int(v) for k, v in counts.items() if k not in order}
