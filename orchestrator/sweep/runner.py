"""``run_sweep``: a grid on Ray Tune, resumable from its storage, with MLflow tracking and the results table.

Storage layout (``<storage>/<name>/``, a local path or a URI such as ``s3://bucket/sweeps/paper``)::

    tuner.pkl, experiment_state-*.json   Tune's experiment state (what ``Tuner.restore`` reads)
    orch-sweep.json                      the planned trials (configs + resources); a rerun must match it
    <trial_id>/checkpoint_NNNNNN/        the trial's latest checkpoint = its run directory (last.pt, best.pt,
                                         result.json, history.csv, per_patient_dice.csv, plots); a finished
                                         trial's holds no last.pt, and no best.pt outside the top
                                         ``keep_checkpoints`` (MLflow refers to the kept best.pt, never copies it
                                         unless ``TrackingConfig.log_checkpoints="copy"``)
    ray-train/<trial_id>/                Ray Train runs of trials with --gpus-per-trial > 1
    results.csv                          one row per trial (see ``rows.COLUMNS``): a configuration, or with
                                         --folds K one fold of one (``fold`` column)
    cv/<config id>/, cv_results.csv      with --folds K: each configuration's K folds gathered, every patient
                                         tested once (``orchestrator.sweep.cv``)
    tables: report tables (CSV + Markdown, ``orchestrator.report.write_tables``)

Running the same command again restores the sweep: finished trials are kept, unfinished ones continue from
their last checkpoint, errored ones are rerun from scratch with ``restart_errored``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.config import ConfigError, SweepConfig, TrackingConfig
from orchestrator.grids import load_grid, with_folds
from orchestrator.sweep import storage as st
from orchestrator.sweep.cv import check_folds, write_sweep_cv
from orchestrator.sweep.plan import (
    TrialPlan,
    default_max_concurrent,
    plan_sweep,
    trial_process_reuse,
)
from orchestrator.sweep.rows import collect_rows, status_counts, write_results

log = logging.getLogger(__name__)

PLAN_FILE = "orch-sweep.json"


@dataclass
class SweepOutcome:
    """What a sweep produced: the results table, where it lives, and how it went."""

    name: str
    sweep_dir: str  # <storage>/<name> (local path or URI)
    results_dir: Path  # local directory holding results.csv and the tables
    results: pd.DataFrame
    counts: dict[str, int]
    elapsed_s: float
    restored: bool
    tables: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)  # trial id -> progress.TrialState (benchmarks)
    checkpoints: dict[str, str] = field(default_factory=dict)  # trial id -> its kept best.pt (path or URI)

    @property
    def results_csv(self) -> Path:
        return self.results_dir / "results.csv"

    def summary(self) -> str:
        """One line: counts, time, best configuration by test ``dice_volume_mean``."""
        from orchestrator.fmt import fmt_value

        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items()) or "no trials"
        m, s = divmod(int(round(self.elapsed_s)), 60)
        resumed = " (resumed)" if self.restored else ""
        line = f"sweep {self.name}{resumed}: {len(self.results)} configurations ({counts}) in {m}m{s:02d}s"
        scored = self.results.dropna(subset=["test_dice_volume_mean"]) if len(self.results) else self.results
        if len(scored):
            best = scored.loc[pd.to_numeric(scored["test_dice_volume_mean"]).idxmax()]
            dice = fmt_value(float(best["test_dice_volume_mean"]))
            line += f"; best {best['trial_id']}: test dice_volume_mean {dice}"
        return f"{line}; results: {self.results_csv}"


def run_sweep(cfg: SweepConfig, tracking: TrackingConfig | None = TrackingConfig(), console=None,
              workdir: str | os.PathLike | None = None) -> SweepOutcome:
    """Run (or resume) the sweep ``cfg`` on Ray and write its results.

    ``tracking=None`` runs without MLflow (mechanics tests); the default records into
    ``sqlite:///<workdir>/mlflow.db``. ``console`` (a rich Console) shows the live trial table. Starts a
    local Ray (stopped at the end) unless ``cfg.address`` is given or Ray is already initialised.
    """
    import ray
    from ray import tune

    from orchestrator.sweep.progress import SweepProgress
    from orchestrator.sweep.trial import (
        TRIAL_KEY,
        run_trial,
        trial_dirname,
        trial_resources,
    )

    t0 = time.time()
    workdir = Path(workdir or os.getcwd()).resolve()
    name = cfg.sweep_name
    entries = load_grid(cfg.grid, cfg.overrides)  # validates the grid before anything starts
    data = st.check_data(cfg.data)
    patients = check_folds(data, cfg.folds) if cfg.folds else None  # what K folds must cover, each patient once
    storage = st.resolve_storage(cfg.storage, workdir)
    exp_path = st.join(storage, name)
    results_dir = Path(exp_path) if not st.is_uri(exp_path) else workdir / "sweeps" / name
    restorable = st.restorable(exp_path)
    if cfg.resume and not restorable:
        raise ConfigError(f"--resume: there is no sweep {name!r} to resume in {storage} (no Tune experiment state "
                          f"in {exp_path}); run without --resume to start it")

    # Tune forces a state snapshot after each checkpoint (num_to_keep=1): that is what makes a SIGKILLed driver
    # resumable, not a bottleneck at one checkpoint per epoch, so its warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's new console output prints its own banner even at verbose=0; the live table is ours.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    own_ray = not ray.is_initialized()
    if own_ray:
        if cfg.address:
            ray.init(address=cfg.address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        cluster = ray.cluster_resources()
        plans = plan_sweep(cfg, entries, use_gpus=cluster.get("GPU", 0) > 0)
        st.check_plan(exp_path, PLAN_FILE, plans, name)
        spec_tracking, sweep_tracker = _open_tracking(tracking, name, cfg, plans, workdir, results_dir)
        specs = [p.to_dict() | {"data": data, "sweep": name, "storage": storage, "tracking": spec_tracking,
                                "train_storage": st.join(exp_path, "ray-train")} for p in plans]
        progress = SweepProgress(plans, console=console, title=f"sweep {name}")
        trainable = tune.with_resources(run_trial, trial_resources)
        if restorable:
            log.info("restoring sweep %s from %s", name, exp_path)
            tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True,
                                       restart_errored=cfg.restart_errored)
            # The run config (callbacks included) comes back from tuner.pkl; the live table is this process's.
            # (Tune has no public setter; through Ray Client there is no local tuner and no live table.)
            internal = getattr(tuner, "_local_tuner", None)
            if internal is not None:
                internal.get_run_config().callbacks = [progress]
        else:
            max_conc = cfg.max_concurrent or default_max_concurrent(plans, cluster)
            tuner = tune.Tuner(
                trainable,
                param_space={TRIAL_KEY: tune.grid_search(specs)},
                tune_config=tune.TuneConfig(max_concurrent_trials=max_conc, trial_name_creator=trial_dirname,
                                            trial_dirname_creator=trial_dirname,
                                            # CPU-only sweeps run the next trial in the finished trial's
                                            # process (trial_process_reuse: no per-trial start of Python,
                                            # torch and MLflow) and trim its heap after each trial (without,
                                            # two reused processes of the 45-trial demo grew to 10.9 GB
                                            # each). Trials with GPUs get a fresh process: it returns the
                                            # CUDA context and cached memory to the trials packed beside it.
                                            reuse_actors=trial_process_reuse(plans)),
                run_config=tune.RunConfig(
                    name=name, storage_path=storage, verbose=0, callbacks=[progress],
                    failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                    # One checkpoint per trial is enough: it is the whole run directory (last.pt AND best.pt).
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                ),
            )
        progress.start()
        try:
            grid = tuner.fit()
        finally:
            progress.stop()
        # results.csv in the grid's row order (with --folds, a row's folds together)
        order = {e.trial_id: i for i, e in enumerate(with_folds(entries, cfg.folds))}
        df = collect_rows(grid, sorted(plans, key=lambda p: order[p.trial_id]))
    finally:
        if own_ray:
            ray.shutdown()
    if st.is_uri(storage):  # Tune's paths lack the scheme: results.csv says s3://bucket/..., not bucket/...
        df["run_dir"] = [st.location(d, storage) if isinstance(d, str) else d for d in df["run_dir"]]
    kept, pruned = _keep_checkpoints(df, cfg.keep_checkpoints, exp_path)
    write_results(df, results_dir)
    tables = _write_tables(df, results_dir)
    if cfg.folds:  # before finish: the parent run logs cv_results.csv and cv/*/
        write_sweep_cv(df, results_dir, cfg.folds, patients)
    if sweep_tracker is not None:
        # Models need a kept checkpoint: never more of them than checkpoints kept.
        top_k = min(tracking.log_models_top_k, cfg.keep_checkpoints or tracking.log_models_top_k)
        sweep_tracker.finish(results_dir, top_k=top_k, log_checkpoints=tracking.log_checkpoints,
                             checkpoints=kept, pruned=pruned)
    if st.is_uri(exp_path):
        st.upload(results_dir, exp_path)
    outcome = SweepOutcome(name=name, sweep_dir=exp_path, results_dir=results_dir, results=df,
                           counts=status_counts(df), elapsed_s=time.time() - t0, restored=restorable, tables=tables,
                           timings=dict(progress.states), checkpoints=kept)
    log.info(outcome.summary())
    return outcome


def _keep_checkpoints(df: pd.DataFrame, keep: int | None, sweep_dir: str) -> tuple[dict[str, str], dict[str, str]]:
    """Delete best.pt of the finished (or diverged) trials outside the top ``keep`` by test dice_volume_mean
    (None: keep all); everything else of their run directories stays; only files inside ``sweep_dir`` are ever
    deleted (results.csv is a file a user can edit). Returns (trial id -> kept best.pt,
    trial id -> why it has none). Unfinished trials are never touched: their checkpoint is how they resume."""
    from orchestrator.tracking.models import top_trials

    ranked = list(top_trials(df, len(df))["trial_id"])  # best first
    top = set(ranked[:keep]) if keep is not None else None
    why = f"not kept: outside the top {keep} by test dice_volume_mean (keep_checkpoints={keep})"
    kept, pruned, freed = {}, {}, 0
    for tid, status, run_dir in zip(df["trial_id"], df["status"], df["run_dir"]):
        if status not in ("finished", "diverged") or not isinstance(run_dir, str) or not run_dir:
            continue
        best = st.join(run_dir, "best.pt")
        if top is not None and tid not in top:
            try:
                freed += st.delete_file(st.inside(best, sweep_dir))
            except ValueError as e:  # an edited results.csv: never delete outside the sweep
                log.warning("trial %s: %s; its checkpoint is left alone", tid, e)
                continue
            pruned[tid] = why
        elif st.file_size(best) is not None:
            kept[tid] = best
    if top is not None:
        log.info("kept the checkpoints of %d trials (top %d by test dice_volume_mean); deleted %d bytes of the "
                 "others'", len(kept), keep, freed)
    order = {t: i for i, t in enumerate(ranked)}  # kept: best first, then unranked ones in grid order
    return dict(sorted(kept.items(), key=lambda kv: order.get(kv[0], len(order)))), pruned


def _open_tracking(tracking: TrackingConfig | None, name: str, cfg: SweepConfig, plans: list[TrialPlan],
                   workdir: Path, results_dir: Path) -> tuple[dict[str, Any] | None, Any]:
    """Open (or reattach to) the sweep's parent MLflow run on the driver, once; trials get plain ids."""
    if tracking is None:
        return None, None
    from orchestrator.tracking import SweepTracker, default_tracking_uri

    uri = tracking.tracking_uri or default_tracking_uri(workdir)
    axes = {axis: ",".join(dict.fromkeys(str(getattr(p.config, axis)) for p in plans))
            for axis in ("encoder", "optimizer", "lr")}
    tracker = SweepTracker.open(uri, experiment=tracking.experiment or name, sweep_name=name,
                                tags={"grid": str(cfg.grid)}, data=cfg.data,
                                params={"grid": str(cfg.grid), "trials": len(plans), **axes,
                                        "overrides": json.dumps(cfg.overrides, sort_keys=True)})
    buffer_dir = tracking.buffer_dir or str(results_dir / "mlflow-buffer")
    return ({"uri": uri, "experiment_id": tracker.experiment_id, "parent_run_id": tracker.parent_run_id,
             "buffer_dir": buffer_dir}, tracker)


def _write_tables(df: pd.DataFrame, results_dir: Path) -> dict[str, Path]:
    """The paper-layout tables (helper module ``orchestrator.report``), when that module is installed."""
    try:
        from orchestrator.report import write_tables
    except ModuleNotFoundError as e:
        if e.name != "orchestrator.report":
            raise
        log.warning("report tables not written (%s); results.csv is complete", e)
        return {}
    return write_tables(df, results_dir)
