"""``run_sweep``: a grid on Ray Tune, resumable from its storage, with MLflow tracking and the results table.

Storage layout (``<storage>/<name>/``, a local path or a URI such as ``s3://bucket/sweeps/paper``)::

    tuner.pkl, experiment_state-*.json   Tune's experiment state (what ``Tuner.restore`` reads)
    orch-sweep.json                      the planned trials (configs + resources) and the scheduler's options
                                         (``SchedulerConfig.record``); a rerun must match both
    <trial_id>/checkpoint_NNNNNN/        the trial's latest checkpoint = its run directory (last.pt, best.pt,
                                         result.json, history.csv, per_patient_dice.csv, per_patient.csv,
                                         plots); a finished (or ASHA-stopped) trial's holds no last.pt,
                                         and no best.pt outside the top
                                         ``keep_checkpoints`` (MLflow refers to the kept best.pt, never copies it
                                         unless ``TrackingConfig.log_checkpoints="copy"``)
    ray-train/<trial_id>/                Ray Train runs of trials with --gpus-per-trial > 1
    results.csv                          one row per trial (``orchestrator.results_schema``): a configuration,
                                         or with --folds K one fold of one (``fold`` column), with --seeds N
                                         one seed of one (``seed`` column)
    per_patient.csv                      every trial's test patients, one row each (``orchestrator.sweep.patients``)
    cv/<config id>/, cv_results.csv      with --folds K: each configuration's K folds gathered, every patient
                                         tested once (``orchestrator.sweep.cv``)
    paper_tables.*, plot_*.png           the report (``orchestrator.report.write_report``), written once,
                                         before MLflow's finish uploads it
    stats_*.csv, stats.md                its statistics from per_patient.csv (which configurations differ
                                         from the best beyond patient noise; ``orchestrator.report.stats``)
    mlflow-buffer/                       MLflow records an outage left (``orch report --sync`` uploads them)

Running the same command again restores the sweep: finished trials (and those ASHA stopped) are kept, unfinished
ones continue from their last checkpoint, errored ones are rerun from scratch with ``restart_errored``; the live
table starts from what was done, and a screened sweep's ASHA gets back the rung records Tune does not save.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.config import ConfigError, SweepConfig, TrackingConfig
from orchestrator.grids import expand, load_grid
from orchestrator.report import write_report
from orchestrator.results_schema import BUFFER_DIRNAME, PER_PATIENT_CSV
from orchestrator.sweep import storage as st
from orchestrator.sweep.cv import check_folds, write_sweep_cv
from orchestrator.sweep.outcome import SweepOutcome
from orchestrator.sweep.patients import write_sweep_patients
from orchestrator.sweep.plan import (
    TrialPlan,
    default_max_concurrent,
    plan_sweep,
    trial_process_reuse,
)
from orchestrator.sweep.rows import collect_rows, status_counts, write_results
from orchestrator.sweep.schedulers import (
    SchedulerConfig,
    build_scheduler,
    common_epochs,
    trial_histories,
    write_sweep_screening,
)

log = logging.getLogger(__name__)

PLAN_FILE = "orch-sweep.json"


@dataclass(frozen=True)
class _Site:
    """Where a sweep lives and what it trains on, checked before Ray starts."""

    name: str
    entries: list  # the grid's rows
    data: str  # the prepared data every trial opens
    patients: list[str] | None  # with --folds K: every prepared patient, each to be tested once
    storage: str
    exp_path: str  # <storage>/<name>: Tune's experiment directory
    results_dir: Path  # local directory of results.csv and the report
    restorable: bool  # a previous run left Tune state to restore
    scheduler: SchedulerConfig  # fifo: the full grid; asha: screening
    epochs: int | None  # --scheduler asha: every trial's epochs (None: fifo)


@dataclass
class _Trials:
    """What the Tune experiment left: one row per planned trial, the open parent run, per-trial timings."""

    df: pd.DataFrame
    tracker: Any  # tracking.SweepTracker, or None without tracking
    timings: dict[str, Any]
    histories: pd.DataFrame | None = None  # --scheduler asha: every trial's per-epoch metric


def run_sweep(cfg: SweepConfig, tracking: TrackingConfig | None = TrackingConfig(), console=None,
              workdir: str | os.PathLike | None = None) -> SweepOutcome:
    """Run (or resume) the sweep ``cfg`` on Ray and write its results and report.

    ``tracking=None`` runs without MLflow (mechanics tests); the default records into
    ``sqlite:///<workdir>/mlflow.db``. ``console`` (a rich Console) shows the live trial table. Starts a
    local Ray (stopped at the end) unless ``cfg.address`` is given or Ray is already initialised.
    """
    t0 = time.time()
    workdir = Path(workdir or os.getcwd()).resolve()
    site = _locate(cfg, workdir)
    trials = _run_trials(cfg, site, tracking, console, workdir)
    report, kept = _conclude(cfg, site, trials, tracking)
    outcome = SweepOutcome(name=site.name, sweep_dir=site.exp_path, results_dir=site.results_dir, results=trials.df,
                           counts=status_counts(trials.df), elapsed_s=time.time() - t0, restored=site.restorable,
                           report=report, timings=trials.timings, checkpoints=kept)
    log.info(outcome.summary())
    return outcome


def _locate(cfg: SweepConfig, workdir: Path) -> _Site:
    """Validate the grid, the data and (with --folds) the fold count, and find the sweep's storage."""
    name = cfg.sweep_name
    entries = load_grid(cfg.grid, cfg.overrides)  # validates the grid before anything starts
    data = st.check_data(cfg.data)
    patients = check_folds(data, cfg.folds) if cfg.folds else None  # what K folds must cover, each patient once
    storage = st.resolve_storage(cfg.storage, workdir)
    exp_path = st.join(storage, name)
    restorable = st.restorable(exp_path)
    if cfg.resume and not restorable:
        raise ConfigError(f"--resume: there is no sweep {name!r} to resume in {storage} (no Tune experiment state "
                          f"in {exp_path}); run without --resume to start it")
    results_dir = Path(exp_path) if not st.is_uri(exp_path) else workdir / "sweeps" / name
    scheduler = SchedulerConfig(kind=cfg.scheduler, grace_period=cfg.grace_period,
                                reduction_factor=cfg.reduction_factor, metric=cfg.asha_metric)
    epochs = common_epochs(e.config.epochs for e in entries) if scheduler.kind == "asha" else None
    if epochs is not None:
        scheduler.check(epochs)  # a ConfigError before Ray starts: no rung below the last epoch
    st.check_options(exp_path, PLAN_FILE, name, scheduler.record(epochs), cfg.checkpoint_every)  # a rerun's options
    return _Site(name=name, entries=entries, data=data, patients=patients, storage=storage, exp_path=exp_path,
                 results_dir=results_dir, restorable=restorable, scheduler=scheduler, epochs=epochs)


def _start_ray(cfg: SweepConfig) -> bool:
    """Join ``cfg.address`` or start a local Ray, unless Ray is already initialised; True when this call did."""
    import ray

    # Tune forces a state snapshot after each checkpoint (num_to_keep=1): that is what makes a SIGKILLed driver
    # resumable, not a bottleneck at one checkpoint per epoch, so its warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's new console output prints its own banner even at verbose=0; the live table is ours.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's automatic loggers include TensorBoard's (2.8 s to import tensorboardX on 2 cores, and an event file per
    # trial nobody reads: metrics go to MLflow); ``_callbacks`` adds the CSV and JSON ones Tune's results read.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return False
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return True


def _run_trials(cfg: SweepConfig, site: _Site, tracking: TrackingConfig | None, console, workdir: Path) -> _Trials:
    """Plan the trials on the cluster's resources, open the MLflow parent run, run (or restore) the Tune experiment
    with the live table, and collect one row per trial in the grid's order (with --folds / --seeds, a row's folds
    and seeds together)."""
    import ray

    from orchestrator.sweep.progress import SweepProgress

    own_ray = _start_ray(cfg)
    try:
        cluster = ray.cluster_resources()
        plans = plan_sweep(cfg, site.entries, use_gpus=cluster.get("GPU", 0) > 0)
        st.check_plan(site.exp_path, PLAN_FILE, plans, site.name, site.scheduler.record(site.epochs))
        spec_tracking, tracker = _open_tracking(tracking, site.name, cfg, plans, workdir, site.results_dir)
        progress = SweepProgress(plans, console=console, title=f"sweep {site.name}")
        if site.restorable:
            tuner = _restore_tuner(cfg, site, plans, progress)
        else:
            tuner = _new_tuner(cfg, site, plans, _trial_specs(plans, site, spec_tracking), cluster, progress)
        progress.start()
        try:
            grid = tuner.fit()
        finally:
            progress.stop()
        order = {e.trial_id: i for i, e in enumerate(expand(site.entries, cfg.folds, cfg.seeds))}
        df = collect_rows(grid, sorted(plans, key=lambda p: order[p.trial_id]))
        histories = trial_histories(grid, site.scheduler.metric) if site.epochs else None
    finally:
        if own_ray:
            ray.shutdown()
    return _Trials(df=df, tracker=tracker, timings=dict(progress.states), histories=histories)


def _trial_specs(plans: list[TrialPlan], site: _Site, spec_tracking: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What each trial process receives: its plan, the data, the sweep, where to store and what to track into."""
    return [p.to_dict() | {"data": site.data, "sweep": site.name, "storage": site.storage, "tracking": spec_tracking,
                           "train_storage": st.join(site.exp_path, "ray-train")} for p in plans]


def _new_tuner(cfg: SweepConfig, site: _Site, plans: list[TrialPlan], specs: list[dict[str, Any]],
               cluster: dict[str, float], progress):
    """A Tune experiment of one trial per spec, ``progress`` as its callback."""
    from ray import tune

    from orchestrator.sweep.trial import TRIAL_KEY, run_trial, trial_dirname, trial_resources

    max_conc = cfg.max_concurrent or default_max_concurrent(plans, cluster)
    return tune.Tuner(
        tune.with_resources(run_trial, trial_resources),
        param_space={TRIAL_KEY: tune.grid_search(specs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_conc, trial_name_creator=trial_dirname,
                                    trial_dirname_creator=trial_dirname,
                                    # CPU-only sweeps run the next trial in the finished trial's process
                                    # (trial_process_reuse: no per-trial start of Python, torch and MLflow) and
                                    # trim its heap after each trial (without, two reused processes of the
                                    # 45-trial demo grew to 10.9 GB each). Trials with GPUs get a fresh process:
                                    # it returns the CUDA context and cached memory to the trials packed beside it.
                                    reuse_actors=trial_process_reuse(plans, site.scheduler.kind),
                                    scheduler=build_scheduler(site.scheduler, site.epochs) if site.epochs else None),
        run_config=tune.RunConfig(
            name=site.name, storage_path=site.storage, verbose=0, callbacks=_callbacks(progress),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            # One checkpoint per trial is enough: it is the whole run directory (last.pt AND best.pt).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def _restore_tuner(cfg: SweepConfig, site: _Site, plans: list[TrialPlan], progress):
    """The sweep's Tune experiment restored from its storage, with this process's live table attached and started
    from what the trials had done, and (``--scheduler asha``) the scheduler's rungs as the trials left them."""
    from ray import tune

    from orchestrator.sweep.trial import run_trial, trial_resources

    log.info("restoring sweep %s from %s", site.name, site.exp_path)
    tuner = tune.Tuner.restore(site.exp_path, tune.with_resources(run_trial, trial_resources),
                               resume_unfinished=True, restart_errored=cfg.restart_errored)
    _attach_callbacks(tuner, _callbacks(progress))
    earlier = _earlier_results(tuner)
    if earlier is not None:
        done = progress.seed(collect_rows(earlier, plans), rerun=("error",) if cfg.restart_errored else ())
        log.info("sweep %s: %d of %d trials were done already", site.name, done, len(plans))
        if site.epochs:
            _restore_rungs(tuner, earlier, site.scheduler.metric)
    return tuner


def _earlier_results(tuner):
    """The restored experiment's ``ResultGrid`` as the previous run left it (Tune reads it on restore), or None
    when Tune could not read it (the sweep still resumes; the table then starts with every trial pending)."""
    try:
        return tuner.get_results()
    except RuntimeError as e:
        log.info("the restored sweep's earlier results are unreadable (%s): the live table starts afresh", e)
        return None


def _restore_rungs(tuner, earlier, metric: str) -> int:
    """Give the restored ASHA scheduler the rung records of the trials' reports before the interruption: Tune saves
    no scheduler state (``tuner.pkl`` holds the scheduler as the sweep created it, with empty rungs), so without
    them every trial reaching a rung after a resume would be compared only with those that reached it since.

    The scheduler of a restored ``Tuner`` is reachable only through Tune's private ``Tuner._local_tuner._tune_config``
    (see ``_attach_callbacks``); guarded like it: without it the sweep resumes with empty rungs and says so."""
    from orchestrator.sweep.schedulers import replay_rungs, tune_trial_ids

    scheduler = getattr(getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None), "scheduler", None)
    if scheduler is None or not hasattr(scheduler, "on_trial_result"):
        log.warning("the restored sweep's ASHA rungs start empty (this Tuner offers no scheduler to give them to): "
                    "trials reaching a rung are compared only with those reaching it after the resume")
        return 0
    replayed = replay_rungs(scheduler, trial_histories(earlier, metric), tune_trial_ids(earlier))
    log.info("restored ASHA's rung records of %d trials from their recorded epochs", replayed)
    return replayed


def _callbacks(progress) -> list:
    """The Tune callbacks of a sweep: the live table, and the per-trial progress.csv and result.json (what Tune's
    ``ResultGrid`` reads; Tune adds them itself unless TUNE_DISABLE_AUTO_CALLBACK_LOGGERS, set by ``_start_ray``)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [progress, CSVLoggerCallback(), JsonLoggerCallback()]


def _attach_callbacks(tuner, callbacks: list) -> bool:
    """Give a restored ``tuner`` this process's Tune ``callbacks`` (the live trial table); True when attached.

    ``Tuner.restore`` brings back the run config, callbacks included, from tuner.pkl: those of the process that
    started the sweep. Ray Tune 2.60 offers no public way to replace them (``Tuner.restore`` takes no run config or
    callbacks; ``Tuner`` has no setter), so this is the one place that reaches into Tune's private
    ``Tuner._local_tuner`` (its ``TunerInternal``, whose ``get_run_config()`` returns the live ``RunConfig``).
    Guarded: through Ray Client there is no local tuner, and a Ray release that renames either attribute costs the
    live table, never the sweep."""
    get_run_config = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", None)
    if get_run_config is None:
        log.info("the restored sweep runs without a live trial table (this Tuner offers no run config to attach "
                 "it to)")
        return False
    get_run_config().callbacks = list(callbacks)
    return True


def _conclude(cfg: SweepConfig, site: _Site, trials: _Trials,
              tracking: TrackingConfig | None) -> tuple[dict[str, Path], dict[str, str]]:
    """After the trials: prune checkpoints, write results.csv, the per-patient table, the report (tables, plots
    and statistics, once) and the cross-validation files, then let MLflow upload them and end the parent run; copy
    the results to a remote storage. Returns (report files, trial id -> kept best.pt)."""
    df = trials.df
    if st.is_uri(site.storage):  # Tune's paths lack the scheme: results.csv says s3://bucket/..., not bucket/...
        df["run_dir"] = [st.location(d, site.storage) if isinstance(d, str) else d for d in df["run_dir"]]
    kept, pruned = st.keep_checkpoints(df, cfg.keep_checkpoints, site.exp_path)
    write_results(df, site.results_dir)
    patients = write_sweep_patients(df, site.results_dir)
    report = write_report(df, site.results_dir, patients=patients)
    report["per_patient"] = site.results_dir / PER_PATIENT_CSV
    if trials.histories is not None:  # screening.md, screening_rungs.csv, screening_history.csv, plot_screening.png
        report.update(write_sweep_screening(df, trials.histories, site.scheduler, site.epochs, site.results_dir))
    if cfg.folds:  # before finish: the parent run logs cv_results.csv and cv/*/
        write_sweep_cv(df, site.results_dir, cfg.folds, site.patients)
    if trials.tracker is not None:
        # Models need a kept checkpoint: never more of them than checkpoints kept.
        top_k = min(tracking.log_models_top_k, cfg.keep_checkpoints or tracking.log_models_top_k)
        trials.tracker.finish(site.results_dir, top_k=top_k, log_checkpoints=tracking.log_checkpoints,
                              checkpoints=kept, pruned=pruned, results=df)
    if st.is_uri(site.exp_path):
        st.upload(site.results_dir, site.exp_path)
    return report, kept


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
    buffer_dir = tracking.buffer_dir or str(results_dir / BUFFER_DIRNAME)
    return ({"uri": uri, "experiment_id": tracker.experiment_id, "parent_run_id": tracker.parent_run_id,
             "buffer_dir": buffer_dir}, tracker)

