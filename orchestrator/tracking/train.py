"""MLflow records of ``orch train``: the sweep layout, with the command's run directory as the "sweep".

One experiment (default ``orch-train``); one parent run per run directory (found again when a rerun resumes, like a
sweep's), one child run per trained model: the run itself, or each fold of ``--folds K`` (``fold<k>``), logged by
the same ``TrialTracker`` a sweep trial uses (per-epoch metrics, test metrics, plots, tables). A cross-validation
adds its summary to the parent as metrics (``cv_dice_volume_mean``, ``cv_dice_volume_median``, ``cv_ci95_low`` /
``_high``, ``cv_patients``) and its per-patient table, summary and plot as artefacts (``report/``). The training
loop never sees MLflow: ``TrainTracker`` only receives its callbacks' reports.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric

from orchestrator.results_schema import BUFFER_DIRNAME
from orchestrator.tracking import store
from orchestrator.tracking.sweep import SweepTracker

DEFAULT_EXPERIMENT = "orch-train"


class TrainTracker:
    """``epoch(fold, report)`` and ``done(fold, result)`` as the loop reports (fold None: a single run);
    ``finish(cv_summary)`` ends the parent. Outages buffer in ``<run dir>/mlflow-buffer`` as in a sweep."""

    def __init__(self, uri: str, run_dir: str | os.PathLike, params: dict[str, Any],
                 experiment: str = DEFAULT_EXPERIMENT, key: str | None = None):
        self.run_dir = Path(run_dir)
        # A run directory's run is one record: its absolute path (and ``key``, the digest of the run's identity,
        # orchestrator/training/runs.py) names the parent run, so a rerun reattaches and a --force run starts anew.
        name = str(self.run_dir.resolve()) + (f"#{key}" if key else "")
        self.parent = SweepTracker.open(uri, experiment=experiment, sweep_name=name,
                                        tags={"orch.command": "train"}, params=params)
        self.params = params
        self.children: dict[int | None, Any] = {}

    def _child(self, fold: int | None):
        if fold not in self.children:
            name = f"fold{fold}" if fold is not None else self.run_dir.name
            child = self.parent.trial(name, buffer_dir=self.run_dir / BUFFER_DIRNAME)
            child.start({**self.params, **({"fold": fold} if fold is not None else {})})
            self.children[fold] = child
        return self.children[fold]

    def epoch(self, fold: int | None, report) -> None:
        self._child(fold).log_epoch(report.epoch, report.metrics)

    def done(self, fold: int | None, result) -> None:
        self._child(fold).finish(result)

    def finish(self, cv_summary: dict[str, Any] | None = None) -> bool:
        """End the parent run (with the cross-validation summary and files, if any); False if the store did not
        answer (the finish is then recorded in ``<run dir>/mlflow-buffer``)."""
        if cv_summary:
            values = {"cv_dice_volume_mean": cv_summary["mean"], "cv_dice_volume_median": cv_summary["median"],
                      "cv_ci95_low": cv_summary["ci95_low"], "cv_ci95_high": cv_summary["ci95_high"],
                      "cv_patients": cv_summary["n_patients"]}
            c = store.client(self.parent.uri)
            now = int(time.time() * 1000)
            c.log_batch(self.parent.parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()
                                                            if v is not None and v == v])
        return self.parent.finish(self.run_dir, top_k=0)
