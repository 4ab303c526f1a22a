"""Cross-validation across a sweep (``orch sweep --folds K``): each grid row's K fold trials gathered into one
per-patient table with the functions ``orch train --folds K`` uses (``orchestrator.training.cv``).

Written into the sweep directory, after ``results.csv``::

    cv/<config id>/cv_per_patient.csv   every patient once: patient, fold, dice, tumour pixels true / predicted
    cv/<config id>/cv_summary.json      mean, median, bootstrap 95 % CI, missing patients, each fold's status
    cv/<config id>/cv_dice.png          per-patient Dice per fold, beside the published figures
    cv_results.csv                      one row per configuration (``COLUMNS``), in grid order

``<config id>`` is the grid row's id, the trial id without its ``-fold<k>``. With ``--seeds N`` each seed's K folds
are one cross-validation of their own, ``<row id>-seed<s>`` (the trial id without its ``-fold<k>``): cv_results.csv
then holds one row per configuration and seed, in grid order, a configuration's seeds together. A configuration
is ``complete`` only when all K folds left a result and every patient of the prepared data appears exactly once;
otherwise it is written as it stands and marked incomplete (its figures cover ``n_patients`` of ``n_expected``),
never passed off as a full cross-validation. No Ray and no MLflow here: the sweep's parent run logs these files
(``SweepTracker``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.config import ConfigError
from orchestrator.errors import MissingPathError
from orchestrator.files import atomic_write_text
from orchestrator.grids import SEED_SUFFIX, config_id
from orchestrator.results_schema import CV_RESULTS, HAS_RESULT
from orchestrator.sweep import storage as st

log = logging.getLogger(__name__)

CV_DIR = "cv"
COLUMNS = ("config_id", "encoder", "optimizer", "lr", "loss", "folds", "folds_finished", "n_patients", "n_expected",
           "mean", "median", "ci95_low", "ci95_high", "complete", "missing_patients", "cv_dir")


def data_patients(data: str) -> list[str]:
    """Every patient of the prepared data at ``data`` (a directory or URI): what the folds partition."""
    text = st.read_text(st.join(data, "manifest.json"))
    if text is None:
        raise MissingPathError(f"{data} holds no manifest.json: pass the prepared data directory (orch prep)")
    shards = json.loads(text)["shards"]
    return sorted({p for s in shards for p in s["patients"]})


def check_folds(data: str, folds: int) -> list[str]:
    """The prepared patients, after checking that ``folds`` folds of them can be dealt (before any trial starts)."""
    patients = data_patients(data)
    if folds < 2 or folds > len(patients):
        raise ConfigError(f"--folds {folds}: cross-validation needs 2 to {len(patients)} folds (the prepared data "
                          f"in {data} holds {len(patients)} patients); Buda et al. used 5")
    return patients


def _fold_result(trial_id: str, status: Any, run_dir: Any):
    """The ``TrainResult`` of one fold trial, or None when it left none (error, unfinished, result.json gone)."""
    from orchestrator.training.outcome import TrainResult

    # A diverged fold is a result too: scored with its best checkpoint, if any.
    if status not in HAS_RESULT or not isinstance(run_dir, str) or not run_dir:
        return None
    text = st.read_text(st.join(run_dir, "result.json"))
    if text is None:
        log.warning("%s is %s but %s holds no result.json: its fold counts as missing", trial_id, status, run_dir)
        return None
    return TrainResult.from_dict({**json.loads(text), "run_dir": run_dir})


def _cv_ids(trials: pd.DataFrame) -> list[str]:
    """The cross-validation each fold trial belongs to: its grid row id, or with ``--seeds N`` its row's and seed's
    (``<row id>-seed<s>``)."""
    seeds = trials["seed"] if "seed" in trials.columns else pd.Series(None, index=trials.index, dtype=float)
    out = []
    for tid, fold, s in zip(trials["trial_id"], trials["fold"], pd.to_numeric(seeds, errors="coerce")):
        seed = None if pd.isna(s) else int(s)
        out.append(config_id(str(tid), int(fold), seed) + (SEED_SUFFIX.format(seed) if seed is not None else ""))
    return out


def write_sweep_cv(results: pd.DataFrame, sweep_dir: str | os.PathLike, folds: int,
                   patients: list[str]) -> pd.DataFrame:
    """Gather every configuration's fold trials of ``results`` (the sweep's results.csv rows, ``fold`` set) into
    ``sweep_dir/cv/<config id>/`` and ``sweep_dir/cv_results.csv``; returns the cv_results table.

    ``patients``: every patient of the prepared data (``data_patients``); each must be tested exactly once for a
    configuration to be complete."""
    from orchestrator.training.cv import fold_rows, write_cv

    sweep_dir = Path(sweep_dir)
    folds_of = results["fold"] if "fold" in results.columns else pd.Series(None, index=results.index, dtype=float)
    trials = results[pd.to_numeric(folds_of, errors="coerce").notna()]
    ids = _cv_ids(trials)
    out_rows: list[dict[str, Any]] = []
    for cid in dict.fromkeys(ids):  # grid order
        group = trials[[i == cid for i in ids]]
        by_fold, rows = {}, []
        for tid, fold, status, run_dir in zip(group["trial_id"], group["fold"], group["status"], group["run_dir"]):
            result = _fold_result(tid, status, run_dir)
            if result is not None:
                by_fold[int(fold)] = result
                rows += fold_rows(int(fold), result)
        first = group.iloc[0]
        row: dict[str, Any] = {"config_id": cid, **{k: first[k] for k in ("encoder", "optimizer", "lr", "loss")},
                               "folds": folds, "folds_finished": len(by_fold), "n_expected": len(patients)}
        if rows:
            out = sweep_dir / CV_DIR / cid
            out.mkdir(parents=True, exist_ok=True)
            summary = write_cv(out, sorted(rows, key=lambda r: (r["fold"], r["patient"])), by_fold,
                               expected_patients=patients)
            complete = bool(summary["complete"]) and len(by_fold) == folds
            row.update({k: summary[k] for k in ("n_patients", "mean", "median", "ci95_low", "ci95_high")},
                       complete=complete, missing_patients=len(summary["missing_patients"]),
                       cv_dir=f"{CV_DIR}/{cid}")
        else:
            row.update(n_patients=0, complete=False, missing_patients=len(patients), cv_dir="")
        if not row["complete"]:
            log.warning("cross-validation of %s is incomplete: %d of %d folds, %d of %d patients", cid,
                        row["folds_finished"], folds, row["n_patients"], len(patients))
        out_rows.append(row)
    table = pd.DataFrame(out_rows, columns=list(COLUMNS))
    atomic_write_text(sweep_dir / CV_RESULTS, table.to_csv(index=False))
    log.info("cross-validation of %d configuration(s) (%d complete): %s", len(table), int(table["complete"].sum()),
             sweep_dir / CV_RESULTS)
    return table
