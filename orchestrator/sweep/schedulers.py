"""How a sweep schedules its trials: the full grid (``fifo``, the default: every trial runs to its last epoch) or
ASHA screening (``orch sweep --scheduler asha``: Ray Tune's ``ASHAScheduler`` stops the trials that trail at each
rung, Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning").

ASHA compares trials at rungs ``grace_period * reduction_factor**k`` epochs (those below the last epoch: a trial at
its last epoch is tested, never stopped). A trial reaching a rung continues when its metric there is in the top
``1 / reduction_factor`` of the trials that reached the rung before it; the first arrivals always continue. Its time
axis is the ``epoch`` every epoch report carries (the final report has none, so ASHA never decides on it).

The defaults fight short-horizon bias (Wu et al. 2018): ranking configurations after a few epochs favours those that
learn fast early, not those that end best. In the paper's grid SGD and lr 1e-4 start slowly and catch up late, so
the first rung is a sizeable share of the run (``grace_period = max(2, epochs // 4)``: a quarter of the training,
under a warm-up and the first steep part of the loss) and the reduction factor is 3, not Tune's 4: each rung keeps
a third, not a quarter. The metric is results.csv's ``val_dice_volume_mean`` (higher is better; a ``*loss`` metric
is lower-is-better).

The results: a stopped trial is ``status="stopped_early"`` with ``stopped_epoch`` (``orchestrator.sweep.rows``);
``rung_decisions`` reconstructs what ASHA decided from the trials' per-epoch histories (Tune's recorded results,
never its internals), and ``write_sweep_screening`` writes the screening report (``orchestrator.report.screening``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator import results_schema as schema
from orchestrator.config import ConfigError
from orchestrator.files import atomic_write
from orchestrator.report.screening import (  # noqa: F401 - compute_saved, compare_winner: the screening's API
    HISTORY_COLUMNS,
    HISTORY_CSV,
    RUNG_COLUMNS,
    STOPPED_EARLY,
    STOPPED_EPOCH,
    compare_winner,
    compute_saved,
    write_screening,
)

SCHEDULERS = ("fifo", "asha")
TIME_ATTR = "epoch"  # every epoch report carries it; the final report does not (ASHA skips results without it)
DEFAULT_METRIC = "val_dice_volume_mean"
DEFAULT_REDUCTION_FACTOR = 3


def default_grace_period(epochs: int) -> int:
    """The first rung: a quarter of the training, at least 2 epochs (see the module's short-horizon argument)."""
    return max(2, int(epochs) // 4)


def metric_choices() -> tuple[str, ...]:
    """The metrics ASHA may rank by: results.csv's validation columns (every report carries them)."""
    return tuple(dict.fromkeys(schema.metric_key("val", m) for m in schema.metric_names()))


@dataclass(frozen=True)
class SchedulerConfig:
    """``orch sweep --scheduler``: ``fifo`` runs the full grid; ``asha`` screens it (``grace_period`` None: the
    default for the sweep's epochs, ``default_grace_period``)."""

    kind: str = "fifo"
    grace_period: int | None = None
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR
    metric: str = DEFAULT_METRIC

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULERS:
            raise ConfigError(f"scheduler={self.kind!r} is not valid; choose one of: {', '.join(SCHEDULERS)}")
        if self.grace_period is not None and (isinstance(self.grace_period, bool) or int(self.grace_period) < 1
                                              or int(self.grace_period) != self.grace_period):
            raise ConfigError(f"grace_period={self.grace_period!r} must be a whole number of epochs >= 1")
        if isinstance(self.reduction_factor, bool) or int(self.reduction_factor) != self.reduction_factor \
                or self.reduction_factor < 2:
            raise ConfigError(f"reduction_factor={self.reduction_factor!r} must be a whole number >= 2 (each rung "
                              "keeps 1 in reduction_factor trials)")
        if self.kind == "asha" and self.metric not in metric_choices():
            raise ConfigError(f"asha metric={self.metric!r} is not valid; choose one of: "
                              f"{', '.join(metric_choices())}")

    @property
    def mode(self) -> str:
        """``min`` for a loss, ``max`` for every other metric."""
        return "min" if self.metric.endswith("loss") else "max"

    def grace(self, epochs: int) -> int:
        return int(self.grace_period) if self.grace_period is not None else default_grace_period(epochs)

    def rungs(self, epochs: int) -> list[int]:
        """The epochs at which ASHA decides: ``grace * reduction_factor**k`` below the last epoch."""
        out, rung = [], self.grace(epochs)
        while rung < epochs:
            out.append(rung)
            rung *= int(self.reduction_factor)
        return out

    def record(self, epochs: int | None) -> dict[str, Any]:
        """What decides which trials run to the end, as the sweep's plan file records it (keys: the ``orch sweep``
        options, values as they took effect: the grace period resolved for ``epochs``); a rerun must match it."""
        if self.kind == "fifo" or epochs is None:
            return {"scheduler": "fifo"}
        return {"scheduler": self.kind, "grace_period": self.grace(epochs),
                "reduction_factor": int(self.reduction_factor), "asha_metric": self.metric}

    def check(self, epochs: int) -> list[int]:
        """The rungs of a sweep of ``epochs``; ConfigError when ASHA would have none below the last epoch (nothing
        could be stopped). Needs no Ray: the sweep checks its options before starting it."""
        rungs = self.rungs(epochs)
        if self.kind == "asha" and not rungs:
            raise ConfigError(f"--scheduler asha: grace_period={self.grace(epochs)} leaves no rung below the last of "
                              f"{epochs} epochs, so nothing could be stopped; pass a smaller --grace-period or more "
                              "--epochs")
        return rungs


def common_epochs(epochs: Iterable[int]) -> int:
    """The one epoch count of a screened sweep's trials; ConfigError when they differ (ASHA compares trials at the
    same epoch, which means different things under different schedules)."""
    found = sorted({int(e) for e in epochs})
    if len(found) != 1:
        raise ConfigError(f"--scheduler asha needs every trial to train the same epochs; this grid has {found}: "
                          "pass --epochs N")
    return found[0]


def build_scheduler(cfg: SchedulerConfig, epochs: int):
    """The Tune scheduler for ``tune.TuneConfig(scheduler=...)``: None for ``fifo`` (Tune's default, the full
    grid), an ``ASHAScheduler`` for ``asha``; ConfigError when ASHA would have no rung below the last epoch."""
    if cfg.kind == "fifo":
        return None
    cfg.check(epochs)
    from ray.tune.schedulers import ASHAScheduler

    # max_t half an epoch below the last: Tune's rungs are then exactly ``rungs`` (none at the last epoch, whose
    # trial is about to be tested), and no float rounding of log(max_t / grace) can drop or add one.
    return ASHAScheduler(time_attr=TIME_ATTR, metric=cfg.metric, mode=cfg.mode, max_t=epochs - 0.5,
                         grace_period=cfg.grace(epochs), reduction_factor=int(cfg.reduction_factor), brackets=1,
                         stop_last_trials=False)


def trial_histories(result_grid, metric: str) -> pd.DataFrame:
    """The per-epoch ``metric`` of every trial of Tune's ``ResultGrid`` (its recorded results), with the time each
    epoch was reported (the order the scheduler saw them in): ``HISTORY_COLUMNS``."""
    frames = []
    for res in result_grid:
        tid = ((res.config or {}).get("trial") or {}).get("trial_id")
        df = getattr(res, "metrics_dataframe", None)
        if tid is None or df is None or not len(df) or TIME_ATTR not in df.columns:
            continue
        df = df[df[TIME_ATTR].notna() & ~df.get("final", pd.Series(False, index=df.index)).isin([True, 1.0])]
        when = next((df[c] for c in ("t_report", "timestamp", "time_total_s") if c in df.columns), math.nan)
        frames.append(pd.DataFrame({"trial_id": tid, "epoch": df[TIME_ATTR].astype(int), "metric": metric,
                                    "value": df[metric] if metric in df.columns else math.nan, "t_report": when}))
    if not frames:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    return out.drop_duplicates(["trial_id", "epoch"], keep="last").reset_index(drop=True)


def tune_trial_ids(result_grid) -> dict[str, str]:
    """Our trial id -> Tune's own (the ``trial_id`` Tune adds to every result: what its scheduler keys trials by),
    for the trials of a ``ResultGrid`` that reported anything."""
    out = {}
    for res in result_grid:
        ours = ((res.config or {}).get("trial") or {}).get("trial_id")
        theirs = (res.metrics or {}).get("trial_id")
        if ours is not None and theirs:
            out[str(ours)] = str(theirs)
    return out


def replay_rungs(scheduler, histories: pd.DataFrame, tune_ids: dict[str, str]) -> int:
    """Feed each trial's recorded epoch reports (``trial_histories``), oldest first, to a restored ASHA
    ``scheduler`` through its own ``on_trial_result``, under the trial's Tune id: its rungs then hold what they held
    before the interruption (a rung records a trial's first report at or past it, whatever order the trials
    arrived in; the decisions it returns now were taken then, and are ignored). Returns the trials replayed."""
    from types import SimpleNamespace

    replayed = 0
    for tid, rows in histories.groupby("trial_id", sort=False):
        if str(tid) not in tune_ids:
            continue
        trial = SimpleNamespace(trial_id=tune_ids[str(tid)])
        scheduler.on_trial_add(None, trial)  # Tune adds the restored trial again when the sweep resumes
        rows = rows.sort_values("epoch", kind="stable")
        for epoch, value in zip(rows["epoch"], rows["value"]):
            scheduler.on_trial_result(None, trial, {TIME_ATTR: int(epoch), scheduler.metric: float(value)})
        replayed += 1
    return replayed


def rung_decisions(histories: pd.DataFrame, cfg: SchedulerConfig, epochs: int,
                   results: pd.DataFrame | None = None) -> pd.DataFrame:
    """What ASHA decided at each rung, replayed from the trials' histories in the order they were reported: one row
    per (rung, trial that reached it) with its value there, the cut-off it met (the ``1 - 1/reduction_factor``
    quantile of the trials that reached the rung before it, as Tune computes it; NaN for the first arrival) and the
    decision. The decision comes from ``results`` where it says (a trial ``stopped_early`` at that epoch), else
    from the replay. ``RUNG_COLUMNS``."""
    rungs = cfg.rungs(epochs)
    stopped_at = _stopped_epochs(results)
    sign = 1.0 if cfg.mode == "max" else -1.0
    seen: dict[int, dict[str, float]] = {r: {} for r in rungs}
    rows = []
    for h in _in_report_order(histories):
        rung = _rung_for(rungs, seen, h["trial_id"], int(h["epoch"]))
        if rung is None:
            continue
        value, before = float(h["value"]), seen[rung]
        cut = float(np.nanpercentile(list(before.values()), (1 - 1 / cfg.reduction_factor) * 100)) \
            if before and not all(math.isnan(v) for v in before.values()) else math.nan
        replayed = "stopped" if not math.isnan(cut) and sign * value < cut else "continued"
        if h["trial_id"] in stopped_at:
            decision = "stopped" if stopped_at[h["trial_id"]] == int(h["epoch"]) else "continued"
        else:
            decision = replayed
        rows.append({"rung": rung, "trial_id": h["trial_id"], "metric": cfg.metric, "value": value,
                     "cutoff": sign * cut, "decision": decision, "arrival": len(before) + 1})
        before[h["trial_id"]] = sign * value
    return pd.DataFrame(rows, columns=list(RUNG_COLUMNS))


def _in_report_order(histories: pd.DataFrame) -> list[dict[str, Any]]:
    """History rows in the order they were reported (stable: equal times keep the table's order)."""
    if histories is None or not len(histories):
        return []
    return histories.sort_values(["t_report", "epoch"], kind="stable").to_dict("records")


def _rung_for(rungs: list[int], seen: dict[int, dict[str, float]], trial_id: str, epoch: int) -> int | None:
    """The rung this report decides, as Tune's bracket finds it: the highest rung at or below ``epoch`` that the
    trial has not reached yet (None: it decides nothing)."""
    for rung in reversed(rungs):
        if epoch >= rung and trial_id not in seen[rung]:
            return rung
        if epoch >= rung:
            return None
    return None


def _stopped_epochs(results: pd.DataFrame | None) -> dict[str, int | None]:
    """Trial id -> the epoch it was stopped at (None: it was not stopped), for the trials of ``results``."""
    if results is None or STOPPED_EPOCH not in results.columns:
        return {}
    stopped = (results["status"] == STOPPED_EARLY) & results[STOPPED_EPOCH].notna()
    return {str(t): int(e) if s else None for t, e, s in zip(results["trial_id"], results[STOPPED_EPOCH], stopped)}


def write_sweep_screening(results: pd.DataFrame, histories: pd.DataFrame, cfg: SchedulerConfig, epochs: int,
                          out_dir: str | os.PathLike) -> dict[str, Path]:
    """After a screened sweep: ``screening_history.csv`` (what the decisions were made on), then the screening
    report (``screening.md``, ``screening_rungs.csv``, ``plot_screening.png``); returns the files by key."""
    path = Path(out_dir) / HISTORY_CSV
    frame = histories.reindex(columns=list(HISTORY_COLUMNS))
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    rungs = rung_decisions(histories, cfg, epochs, results)
    return {"screening_history": path, **write_screening(results, out_dir, rungs, epochs, histories=histories)}
