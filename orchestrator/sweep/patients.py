"""Every trial's per-patient test scores in one long table: ``<sweep dir>/per_patient.csv``, the input of the
report's statistics (``orchestrator.report.stats``).

One row per trial and test patient (``results_schema.SWEEP_PATIENT_COLUMNS``): ``config_id`` (the grid row,
``orchestrator.grids.config_id``: the trial id without ``-fold<k>`` and ``-seed<s>``), ``trial_id``, ``encoder``,
``optimizer``, ``lr``, ``fold`` and ``seed`` from the trial's results.csv row (empty where the sweep had no
--folds / --seeds), then the run directory's ``per_patient.csv``. A trial finished by an older orch has only
``per_patient_dice.csv``: its test rows are read from there. Trials without a result contribute no rows; the
statistics count the patients they miss. Run directories may be URIs (``orchestrator.sweep.storage``).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.files import atomic_write_text
from orchestrator.grids import config_id
from orchestrator.results_schema import HAS_RESULT, PER_PATIENT_CSV, SWEEP_PATIENT_COLUMNS
from orchestrator.sweep import storage as st

log = logging.getLogger(__name__)

LEGACY_CSV = "per_patient_dice.csv"  # every evaluated patient: split, patient, dice, tumour pixels


def _number(v: Any) -> int | None:
    """An int from a results.csv cell (fold, seed), None when empty."""
    v = pd.to_numeric(v, errors="coerce")
    return None if pd.isna(v) else int(v)


def trial_patients(run_dir: str) -> pd.DataFrame | None:
    """The test rows of one run directory (a path or URI): its ``per_patient.csv``, else those of its
    ``per_patient_dice.csv`` renamed to the same columns; None when it holds neither."""
    text = st.read_text(st.join(run_dir, PER_PATIENT_CSV))
    if text is not None:
        table = pd.read_csv(io.StringIO(text))
        return table[table["split"].astype(str) == "test"]
    text = st.read_text(st.join(run_dir, LEGACY_CSV))
    if text is None:
        return None
    table = pd.read_csv(io.StringIO(text)).rename(columns={"dice": "dice_volume"})
    return table[table["split"].astype(str) == "test"] if "split" in table.columns else table.iloc[:0]


def _trial_rows(row: pd.Series) -> pd.DataFrame | None:
    """One results.csv row's patients, with its configuration columns; None when it left none."""
    run_dir = row.get("run_dir")
    if row.get("status") not in HAS_RESULT or not isinstance(run_dir, str) or not run_dir:
        return None
    table = trial_patients(run_dir)
    if table is None:
        log.warning("trial %s is %s but %s holds no %s: its patients are left out of the statistics",
                    row["trial_id"], row["status"], run_dir, PER_PATIENT_CSV)
        return None
    fold, seed = _number(row.get("fold")), _number(row.get("seed"))
    return table.assign(config_id=config_id(str(row["trial_id"]), fold, seed), trial_id=str(row["trial_id"]),
                        encoder=row["encoder"], optimizer=row["optimizer"], lr=float(row["lr"]), fold=fold,
                        seed=seed)


def gather_patients(results: pd.DataFrame) -> pd.DataFrame:
    """Every trial of ``results`` (the sweep's results.csv rows) that left a result: its test patients, in the
    stats input layout (``SWEEP_PATIENT_COLUMNS``), trials in results.csv order."""
    parts = [t for t in (_trial_rows(r) for _, r in results.iterrows()) if t is not None and len(t)]
    if not parts:
        return pd.DataFrame(columns=list(SWEEP_PATIENT_COLUMNS))
    table = pd.concat(parts, ignore_index=True)
    for col in SWEEP_PATIENT_COLUMNS:
        if col not in table.columns:
            table[col] = None
    table = table[list(SWEEP_PATIENT_COLUMNS)]
    return table.astype({"fold": "Int64", "seed": "Int64"})


def write_sweep_patients(results: pd.DataFrame, sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """``gather_patients(results)`` written to ``sweep_dir/per_patient.csv`` (a header only when no trial left
    a result); returns the table."""
    table = gather_patients(results)
    path = Path(sweep_dir) / PER_PATIENT_CSV
    atomic_write_text(path, table.to_csv(index=False))
    log.info("per-patient test scores of %d trial(s), %d row(s): %s", table["trial_id"].nunique(), len(table), path)
    return table
