"""K-fold cross-validation over patients: Buda et al.'s protocol, so figures compare one to one.

``run_cv(cfg, data, out_dir)`` trains fold 1..K of ``cfg.folds`` with the one loop (``fit``) into
``out_dir/fold<k>`` (each resumable on its own), then gathers every fold's test patients into one table: every
patient of the prepared directory is tested exactly once. ``summarize`` gives the mean, the median and a
patient-bootstrap 95 % confidence interval of the per-patient volume Dice; the sweep uses the same functions for
``orch sweep --folds K``.

Files in ``out_dir``: ``cv_per_patient.csv`` (patient, fold, dice, tumour pixels true / predicted),
``cv_summary.json`` (the summary + each fold's status and test metrics), ``cv_dice.png``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config import ConfigError, TrainConfig
from orchestrator.files import atomic_write_text
from orchestrator.training.data import open_data
from orchestrator.training.outcome import EpochReport, TrainResult, write_csv

log = logging.getLogger(__name__)

BOOTSTRAP_SAMPLES = 10_000
PER_PATIENT_CSV = "cv_per_patient.csv"
SUMMARY_JSON = "cv_summary.json"
PLOT = "cv_dice.png"
# Published per-patient Dice on LGG, for plots and reports (Buda et al. 2019: 5-fold CV over all 110 patients).
PUBLISHED = {"Buda et al. 2019 (CV)": 0.82, "human readers": 0.84}


def bootstrap_ci(values: Iterable[float], stat: Callable[[np.ndarray], Any] = np.mean,
                 samples: int = BOOTSTRAP_SAMPLES, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat`` over ``values`` (patients resampled with replacement), seeded."""
    x = np.asarray(list(values), dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = x[rng.integers(0, len(x), size=(samples, len(x)))]
    stats = np.asarray(stat(draws, axis=1))
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def summarize(dice: Iterable[float]) -> dict[str, float]:
    """Per-patient volume Dice -> ``n_patients``, ``mean``, ``median``, ``ci95_low``/``ci95_high`` (bootstrap
    of the mean) and ``std``."""
    x = np.asarray(list(dice), dtype=np.float64)
    lo, hi = bootstrap_ci(x)
    return {"n_patients": int(len(x)), "mean": float(np.mean(x)) if len(x) else float("nan"),
            "median": float(np.median(x)) if len(x) else float("nan"), "ci95_low": lo, "ci95_high": hi,
            "std": float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")}


def fold_rows(fold: int, result: TrainResult) -> list[dict[str, Any]]:
    """The test patients of one fold's result as rows of the cross-validation table."""
    return [{"patient": r["patient"], "fold": fold, "dice": r["dice"],
             "tumour_pixels_true": r["tumour_pixels_true"], "tumour_pixels_pred": r["tumour_pixels_pred"]}
            for r in result.per_patient if r.get("split") == "test"]


@dataclass
class CVResult:
    """What ``run_cv`` produced: per-patient rows over all folds, the summary, and each fold's result."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    folds: list[TrainResult]
    out_dir: Path

    def line(self) -> str:
        s = self.summary
        return (f"{s['n_patients']} patients in {len(self.folds)} folds: dice_volume_mean {s['mean']:.3f} "
                f"(median {s['median']:.3f}, 95% CI {s['ci95_low']:.3f}-{s['ci95_high']:.3f})")


def write_cv(out_dir: Path, rows: list[dict[str, Any]], folds: dict[int, TrainResult],
             expected_patients: Iterable[str] | None = None) -> dict[str, Any]:
    """Write the per-patient table, the summary JSON and the plot into ``out_dir``; returns the summary.

    With ``expected_patients`` the table must hold each exactly once (a fold that failed leaves a gap that the
    summary names, instead of a mean over fewer patients that looks like the real thing)."""
    seen = [r["patient"] for r in rows]
    summary: dict[str, Any] = {**summarize(r["dice"] for r in rows), "folds": len(folds)}
    if expected_patients is not None:
        missing = sorted(set(expected_patients) - set(seen))
        summary["missing_patients"] = missing
        summary["complete"] = not missing and len(seen) == len(set(seen))
    summary["per_fold"] = {str(k): {"status": r.status, "epochs": r.epochs_completed, "best_epoch": r.best_epoch,
                                    "test_dice_volume_mean": r.test.get("dice_volume_mean")}
                           for k, r in sorted(folds.items())}
    write_csv(out_dir / PER_PATIENT_CSV, rows)
    atomic_write_text(out_dir / SUMMARY_JSON, json.dumps(summary, indent=2))
    if rows:
        from orchestrator import run_plots

        run_plots.cv_dice(rows, summary, out_dir / PLOT, references=PUBLISHED)
    return summary


def run_cv(cfg: TrainConfig, data: Any, out_dir: str | Path,
           on_epoch: Callable[[int, EpochReport], None] | None = None,
           on_fold: Callable[[int, TrainResult], None] | None = None, force: bool = False) -> CVResult:
    """Train every fold of ``cfg.folds`` (``cfg.fold`` must be unset) into ``out_dir/fold<k>``; see the module
    doc. ``on_epoch(fold, report)`` and ``on_fold(fold, result)`` report progress. Rerunning resumes: finished
    folds return their stored result, an interrupted one continues from its ``last.pt`` (``fit``: only when the
    fold directory holds this configuration; ``force`` deletes another one's files)."""
    from orchestrator.training.loop import fit

    if not cfg.folds:
        raise ConfigError("cross-validation needs folds >= 2 (e.g. --folds 5)")
    if cfg.fold is not None:
        raise ConfigError(f"fold={cfg.fold} is set: run_cv trains all {cfg.folds} folds; use fit for one")
    out_dir = Path(out_dir)
    data = open_data(data)
    results: dict[int, TrainResult] = {}
    rows: list[dict[str, Any]] = []
    for k in range(1, cfg.folds + 1):
        result = fit(cfg.replace(fold=k), data, out_dir / f"fold{k}",
                     on_epoch=(lambda r, k=k: on_epoch(k, r)) if on_epoch else None, force=force)
        results[k] = result
        rows += fold_rows(k, result)
        log.info("fold %d/%d: %s, test dice_volume_mean %s", k, cfg.folds, result.status,
                 result.test.get("dice_volume_mean"))
        if on_fold:
            on_fold(k, result)
    summary = write_cv(out_dir, rows, results, expected_patients=data.patients())
    return CVResult(rows=rows, summary=summary, folds=[results[k] for k in sorted(results)], out_dir=out_dir)
