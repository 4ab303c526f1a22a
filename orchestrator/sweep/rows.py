"""The sweep's result rows: what a trial reports to Tune and how ``results.csv`` is built from Tune's results.

Every trial reports two kinds of results: after each epoch (``epoch_metrics``, ``final=False``) and once after
training (``final_metrics``, ``final=True``: the row of ``results.csv``). A trial that diverged is a result with
``status="diverged"``; only a trial whose process kept failing is ``"error"``. (Not ``done``: Tune reads a
``done`` metric as "stop this trial now", which kills a Ray Train trial before its trainer has shut down.)
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.sweep.plan import TrialPlan

log = logging.getLogger(__name__)

# The validation/test metrics of DESIGN.md, in the order the columns appear.
METRICS = ("dice_volume_mean", "dice_global", "dice_slice_pos", "dice_slice_all_empty1", "iou_tumour",
           "miou_2class", "pixel_accuracy", "val_loss")


def _metric_key(prefix: str, name: str) -> str:
    # The loop names its evaluation loss "val_loss" / "test_loss": keep those as they are (not "val_val_loss");
    # a validation "val_loss" reported among test metrics becomes "test_loss".
    if name.startswith(f"{prefix}_"):
        return name
    if name == "val_loss":
        return "test_loss"
    return f"{prefix}_{name}"


# ``fold``: the cross-validation fold of the trial (``orch sweep --folds K``), empty otherwise.
CONFIG_COLUMNS = ("trial_id", "encoder", "optimizer", "lr", "loss", "epochs", "batch_size", "fold")
COLUMNS = (*CONFIG_COLUMNS, "status", "epochs_completed", "best_epoch",
           *(_metric_key("val", m) for m in METRICS), *(_metric_key("test", m) for m in METRICS), "train_loss",
           "it_per_s", "img_per_s", "gpus", "workers", "run_dir", "error")


def epoch_metrics(report) -> dict[str, Any]:
    """Tune metrics of one epoch (an ``EpochReport`` of the training loop)."""
    out: dict[str, Any] = {k: float(v) for k, v in report.metrics.items() if _is_number(v)}
    out.update(epoch=int(report.epoch), status=str(report.status), is_best=bool(report.is_best), final=False)
    return out


def final_metrics(result, plan: TrialPlan) -> dict[str, Any]:
    """The ``results.csv`` row of a finished (or diverged) trial, from its ``TrainResult`` (``run_dir`` is added
    by the driver: the path of the trial's final checkpoint in storage)."""
    cfg = plan.config
    row: dict[str, Any] = {"trial_id": plan.trial_id, "encoder": cfg.encoder, "optimizer": cfg.optimizer,
                           "lr": cfg.lr, "loss": cfg.loss, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                           "status": result.status, "epochs_completed": int(result.epochs_completed),
                           "best_epoch": int(result.best_epoch) if result.best_epoch else 0,
                           "gpus": plan.gpus, "workers": plan.workers, "final": True}
    for prefix, values in (("val", result.best_val or {}), ("test", result.test or {})):
        for name, v in values.items():
            if name in METRICS or name.startswith(f"{prefix}_"):  # train figures (loss, it/s) of best_val: below
                if _is_number(v):
                    row[_metric_key(prefix, name)] = float(v)
    if _is_number((result.best_val or {}).get("loss")):
        row["train_loss"] = float(result.best_val["loss"])
    for key in ("it_per_s", "img_per_s"):
        vals = [float(h[key]) for h in (result.history or []) if _is_number(h.get(key))]
        if vals:
            row[key] = sum(vals) / len(vals)
    return row


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def collect_rows(result_grid, plans: list[TrialPlan]) -> pd.DataFrame:
    """One row per planned configuration (grid order kept), whatever state its trial ended in.

    ``result_grid`` is Tune's ``ResultGrid``; a trial missing from it (never started) is ``"pending"``.
    """
    by_id: dict[str, Any] = {}
    for res in result_grid:
        spec = (res.config or {}).get("trial") or {}
        if "trial_id" in spec:
            by_id[spec["trial_id"]] = res
    rows = []
    for plan in plans:
        res = by_id.get(plan.trial_id)
        base = {"trial_id": plan.trial_id, "encoder": plan.config.encoder, "optimizer": plan.config.optimizer,
                "lr": plan.config.lr, "loss": plan.config.loss, "epochs": plan.config.epochs,
                "batch_size": plan.config.batch_size, "fold": plan.config.fold, "gpus": plan.gpus,
                "workers": plan.workers}
        if res is None:
            rows.append({**base, "status": "pending"})
            continue
        metrics = dict(res.metrics or {})
        if metrics.get("final"):
            # Tune adds its own "trial_id" to every result: the configuration columns come from the plan.
            row = {**{k: v for k, v in metrics.items() if k in COLUMNS}, **base}
            # The final checkpoint holds the complete run directory (Ray Train path: reported as a path).
            if res.checkpoint is not None:
                row["run_dir"] = res.checkpoint.path
            elif metrics.get("checkpoint_path"):
                row["run_dir"] = metrics["checkpoint_path"]
        else:
            row = {**base, "status": "error" if res.error else "unfinished",
                   "epochs_completed": int(metrics.get("epoch", 0) or 0)}
        if res.error:
            row["status"] = "error"
            row["error"] = str(res.error).strip().splitlines()[-1][:300] if str(res.error).strip() else "error"
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    return df[list(COLUMNS)]


def write_results(df: pd.DataFrame, sweep_dir: str | os.PathLike) -> Path:
    """Write ``results.csv`` atomically (temp file + rename) into a local sweep directory."""
    out = Path(sweep_dir) / "results.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".csv", dir=out.parent)
    with os.fdopen(fd, "w", newline="") as f:
        df.to_csv(f, index=False)
    os.replace(tmp, out)
    return out


def status_counts(df: pd.DataFrame) -> dict[str, int]:
    """``{"finished": 40, "diverged": 5, ...}`` in a stable order."""
    order = ["finished", "diverged", "error", "unfinished", "pending"]
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    return {k: int(counts[k]) for k in order if k in counts} | {
        k: int(v) for k, v in counts.items() if k not in order}
