"""The sweep's result schema, written once: the columns of ``results.csv`` and the rules behind them, read by
``orchestrator.sweep`` (which writes the rows), ``orchestrator.tracking`` (which logs the same figures to MLflow and
reads them back) and ``orchestrator.report`` (which lays them out beside the paper's).

A row is one trial: its configuration (``CONFIG_COLUMNS``), how it ended, ``val_<metric>`` of its best epoch,
``test_<metric>`` of its best checkpoint (``metric_key``: the loop's ``val_loss`` becomes ``test_loss``), the mean
training speed over its epochs (``mean_speeds``), its resources and run directory. Beside the test metrics:
``test_baseline_<metric>`` (``baseline_key``), the predict-nothing figures of the very slices the trial was tested
on (``BASELINE_METRICS``), which the report compares against. Trials rank by test
``dice_volume_mean`` (``top_trials``). Metric names are ``orchestrator.metrics.EVAL_METRICS`` plus ``val_loss``;
they are read on first use, since that module loads torch, which a report of tables does not otherwise need.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

RESULTS_CSV = "results.csv"  # in the sweep directory: one row per trial
CV_RESULTS = "cv_results.csv"  # beside it, for `orch sweep --folds K`: one row per configuration
BUFFER_DIRNAME = "mlflow-buffer"  # beside it: the MLflow records an outage left for `orch report --sync`

# ``fold``: the cross-validation fold of the trial (``orch sweep --folds K``), empty otherwise; ``seed``: its
# TrainConfig.seed when it is one of the repeats of ``orch sweep --seeds N`` (``repeat_seed``), empty otherwise.
CONFIG_COLUMNS = ("trial_id", "encoder", "optimizer", "lr", "loss", "epochs", "batch_size", "fold", "seed")
CONFIG_TYPES = {"lr": float, "epochs": int, "batch_size": int, "fold": int, "seed": int}  # the others are strings
# Per-patient test scores: a run directory's per_patient.csv (``PATIENT_COLUMNS``; written beside result.json) and
# the sweep directory's (``SWEEP_PATIENT_COLUMNS``: every trial's rows, the input of ``orchestrator.report.stats``).
PER_PATIENT_CSV = "per_patient.csv"
PATIENT_COLUMNS = ("patient", "split", "fold", "seed", "dice_volume", "tumour_pixels_true", "tumour_pixels_pred")
SWEEP_PATIENT_COLUMNS = ("config_id", "trial_id", "encoder", "optimizer", "lr", *PATIENT_COLUMNS)
SPEED_KEYS = ("it_per_s", "img_per_s")  # per epoch in a trial's history; results.csv holds their means
HAS_RESULT = ("finished", "diverged")  # statuses of a trial that left test metrics and a checkpoint
PRIMARY_METRIC = "dice_volume_mean"
# The predict-nothing figures a trial's test pass records (``orchestrator.metrics.baseline_metrics``): the report's
# baseline row (Mean IoU, Dice, Dice/volume) and the sweep plots' baseline lines.
BASELINE_METRICS = ("miou_2class", "dice_slice_all_empty1", "dice_volume_mean")


def metric_names() -> tuple[str, ...]:
    """The validation/test metric names in column order: ``EVAL_METRICS`` of ``orchestrator.metrics``, then
    ``val_loss`` (the loss on the evaluated split)."""
    from orchestrator.metrics import EVAL_METRICS

    return (*EVAL_METRICS, "val_loss")


def metric_key(prefix: str, name: str) -> str:
    """The column (and MLflow key) of metric ``name`` of split ``prefix`` (``val`` or ``test``): ``<prefix>_<name>``.
    A name that already carries the prefix stays as it is (not ``val_val_loss``), and the loop's ``val_loss``
    among test metrics is the loss on the test split: ``test_loss``."""
    if name.startswith(f"{prefix}_"):
        return name
    if name == "val_loss":
        return "test_loss"
    return f"{prefix}_{name}"


def final_metric_key(name: str) -> str:
    """``metric_key("test", name)``: a final (test) metric of a trial, as results.csv and MLflow name it."""
    return metric_key("test", name)


def baseline_key(name: str) -> str:
    """The key of the predict-nothing figure of metric ``name`` on a trial's test patients: ``test_baseline_<name>``,
    in the loop's test metrics (result.json), MLflow and results.csv alike (already ``test_``-prefixed, so
    ``metric_key`` keeps it)."""
    return f"test_baseline_{name}"


RANK_BY = final_metric_key(PRIMARY_METRIC)  # test_dice_volume_mean: what "best trial" means everywhere


@functools.cache
def results_columns() -> tuple[str, ...]:
    """The columns of ``results.csv``, in order."""
    metrics = metric_names()
    return (*CONFIG_COLUMNS, "status", "epochs_completed", "best_epoch",
            *(metric_key("val", m) for m in metrics), *(metric_key("test", m) for m in metrics),
            *(baseline_key(m) for m in BASELINE_METRICS), "train_loss",
            *SPEED_KEYS, "gpus", "workers", "run_dir", "error", "stopped_epoch")


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool): a figure worth recording."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def mean_speeds(history: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The mean of each ``SPEED_KEYS`` figure over the epochs of ``history`` that report it (absent if none)."""
    history = list(history or ())
    out = {}
    for key in SPEED_KEYS:
        vals = [float(h[key]) for h in history if is_number(h.get(key))]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


def mean_metric_key(key: str) -> str:
    """The MLflow metric holding the mean of a ``SPEED_KEYS`` figure (the column ``key`` of results.csv)."""
    return f"{key}_mean"


def repeat_seed(trial_id: str, seed: Any) -> int | None:
    """``seed`` when ``trial_id`` names it as a repeat (ends in ``-seed<seed>``: ``orchestrator.grids.with_seeds``),
    else None: a trial of a sweep without --seeds trains with a seed too, but is no repeat."""
    if seed is None or isinstance(seed, bool):
        return None
    return int(seed) if str(trial_id).endswith(f"-seed{int(seed)}") else None


def config_row(trial_id: str, config: Any) -> dict[str, Any]:
    """The ``CONFIG_COLUMNS`` of one trial, from its ``TrainConfig`` (read by attribute; ``seed`` only for a
    repeat, ``repeat_seed``)."""
    row = {"trial_id": trial_id, **{k: getattr(config, k) for k in CONFIG_COLUMNS[1:]}}
    row["seed"] = repeat_seed(trial_id, row["seed"])
    return row


def parse_config(params: Mapping[str, str]) -> dict[str, Any]:
    """``CONFIG_COLUMNS`` (but the trial id) from a trial's logged params (strings), typed as in results.csv;
    a missing or ``None`` value is None, and ``seed`` is None unless the logged ``trial_id`` names a repeat."""
    out: dict[str, Any] = {}
    for k in CONFIG_COLUMNS[1:]:
        v = params.get(k)
        out[k] = None if v in (None, "", "None") else CONFIG_TYPES.get(k, str)(v)
    out["seed"] = repeat_seed(params.get("trial_id", ""), out["seed"])
    return out


def top_trials(results: pd.DataFrame, k: int, metric: str = RANK_BY) -> pd.DataFrame:
    """The ``k`` finished trials with the highest ``metric`` (NaN and unfinished ones never qualify)."""
    if metric not in results.columns or "status" not in results.columns:
        return results.iloc[0:0]
    scores = pd.to_numeric(results[metric], errors="coerce")
    done = scores[(results["status"] == "finished") & scores.notna()]
    # Stable: equal scores keep the table's (grid) order, so a rerun picks the same trials.
    return results.loc[done.sort_values(ascending=False, kind="stable").index].head(k)
