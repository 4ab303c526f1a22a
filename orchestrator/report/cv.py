"""The cross-validation table of ``orch report`` for sweeps run with ``orch sweep --folds K``.

Per configuration: the mean, median and patient-bootstrap 95 % CI of the per-patient volume Dice over every
prepared patient (each tested once, by the fold that held it out), from ``cv_results.csv`` (written by
``orchestrator.sweep.cv``), beside the published figures on LGG (Buda et al. 2019, 5-fold CV, and human readers:
``orchestrator.training.cv.PUBLISHED``) and the predict-nothing baseline (0: every LGG patient has tumour). An
incomplete configuration (a fold failed or is unfinished) shows no figures: a mean over fewer patients is not a
cross-validation result.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from orchestrator.files import atomic_write_text
from orchestrator.fmt import fmt_value
from orchestrator.report.tables import BASELINE, Baseline
from orchestrator.results_schema import CV_RESULTS  # written by the sweep into its directory

CV_MARKDOWN = "cv_tables.md"
HEADER = ("Configuration", "Encoder", "Optimizer", "lr", "Loss", "Folds", "Patients", "Mean", "Median", "95% CI",
          "Status")


def read_cv_results(sweep_dir: str | os.PathLike | None) -> pd.DataFrame | None:
    """The sweep's ``cv_results.csv``, or None when the sweep ran without folds (or is not a local directory)."""
    path = Path(sweep_dir) / CV_RESULTS if sweep_dir is not None else None
    return pd.read_csv(path) if path is not None and path.is_file() else None


def _published() -> dict[str, float]:
    # Imported here: orchestrator.training loads torch, which a report of tables does not otherwise need.
    from orchestrator.training.cv import PUBLISHED

    return PUBLISHED


def _complete(v) -> bool:
    return str(v).strip().lower() in ("true", "1")


def cv_markdown(cv: pd.DataFrame, baseline: Baseline | None = None) -> str:
    """``cv_results.csv`` as a Markdown section: one row per configuration, then the reference rows. ``baseline``:
    the predict-nothing figures of the sweep's trials (``tables.baseline`` of its results.csv); without it, the full
    LGG's (0), labelled as that reference."""
    baseline = baseline or Baseline(dict(BASELINE), measured=False)
    folds = ", ".join(str(int(k)) for k in sorted(set(cv["folds"].dropna()))) or "?"
    out = [f"### Cross-validation ({folds} folds): per-patient volume Dice, every patient tested once", "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for _, r in cv.iterrows():
        done = _complete(r["complete"])
        status = "complete" if done else (f"incomplete: {int(r['folds_finished'])} of {int(r['folds'])} folds, "
                                          f"{int(r['n_patients'])} of {int(r['n_expected'])} patients")
        figures = [fmt_value(r["mean"]), fmt_value(r["median"]),
                   f"{fmt_value(r['ci95_low'])}-{fmt_value(r['ci95_high'])}"] if done else ["–"] * 3
        out.append("| " + " | ".join([str(r["config_id"]), str(r["encoder"]), str(r["optimizer"]),
                                      f"{float(r['lr']):g}", str(r["loss"]),
                                      f"{int(r['folds_finished'])}/{int(r['folds'])}",
                                      f"{int(r['n_patients'])}/{int(r['n_expected'])}", *figures, status]) + " |")
    for label, value in _published().items():
        out.append("| " + " | ".join([label, "", "", "", "", "", "", fmt_value(value), "–", "–", "published"])
                   + " |")
    base = fmt_value(baseline.figures["Dice/volume"])
    out.append("| " + " | ".join([baseline.label, "", "", "", "", "", "", base, base, "–", "baseline"]) + " |")
    out += ["", "Ours: each fold's best-validation checkpoint scores the patients that fold held out; Mean and "
            "Median over all patients, 95% CI = patient bootstrap of the mean. Buda et al. 2019 report the same "
            "per-patient mean from 5-fold cross-validation over the 110 LGG patients; a model that predicts "
            "nothing scores 0 on every patient (each has tumour). Incomplete configurations (a fold failed or is "
            "unfinished) show no figures: cv_results.csv and cv/<configuration>/ say what is missing.", ""]
    return "\n".join(out)


def write_cv_table(cv: pd.DataFrame, out_dir: str | os.PathLike, baseline: Baseline | None = None) -> Path:
    """Write ``cv_tables.md`` into ``out_dir`` (``baseline``: as ``cv_markdown``); returns its path."""
    path = Path(out_dir) / CV_MARKDOWN
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, cv_markdown(cv, baseline))
    return path
