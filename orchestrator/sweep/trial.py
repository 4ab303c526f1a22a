"""The Tune function trainable: one configuration of a sweep, trained by the one loop (``training.fit``).

Three layers, as Ray's Train+Tune docs recommend: ``train_loop`` runs ``fit`` and reports each epoch (the same
code in-process or in every Ray Train worker); ``run_trial`` is the Tune function, which either calls it
directly (<= 1 GPU: no controller actor or worker group to start, see BENCHMARKS.md) or builds a
``TorchTrainer`` that runs it on N workers with DDP (``--gpus-per-trial N > 1``).

Stopping: a scheduler (``orch sweep --scheduler asha``) stops a trial after one of its epoch reports; Tune then
exits the training thread from inside ``report`` (SystemExit), and the trial leaves its run directory as it was.

Resuming: every ``checkpoint_every``-th epoch's report (default every epoch; ``orch sweep --checkpoint-every N``)
and the final one carry a checkpoint that is a copy of the run directory (``last.pt``, ``best.pt``, history...) to
the sweep's storage; the other epochs report metrics only. A restarted trial (node lost, driver killed, sweep
rerun) gets the last one back from ``tune.get_checkpoint()`` / ``ray.train.get_checkpoint()``, copies it into a
fresh run directory and ``fit`` continues from ``last.pt``; a finished run's checkpoint holds ``result.json``, so
``fit`` returns at once.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from orchestrator.config import check_name
from orchestrator.errors import UserError
from orchestrator.files import inside
from orchestrator.sweep.plan import TrialPlan
from orchestrator.sweep.rows import epoch_metrics, final_metrics

log = logging.getLogger(__name__)

TRIAL_KEY = "trial"  # param_space = {"trial": tune.grid_search([spec, ...])}
RUNS_ROOT_ENV = "ORCH_RUNS_DIR"  # node-local scratch for run directories (default: runs_root())


def trial_dirname(trial) -> str:
    """Tune trial directory and name: the trial id (stable, so restores find their trials)."""
    return trial.config[TRIAL_KEY]["trial_id"]


def trial_resources(config: dict[str, Any]):
    """What Tune reserves for a trial function (``tune.with_resources`` callback)."""
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([TrialPlan.from_dict(config[TRIAL_KEY]).tune_resources()])


def runs_root() -> Path:
    """The node-local scratch root of this user's trials: ``$ORCH_RUNS_DIR``, else ``<tmp>/orch-runs-<uid>`` (one per
    user: a shared ``/tmp/orch-runs`` made by one user failed every other user's trials with a PermissionError).
    A root this user cannot write to is refused with the variable to set."""
    env = os.environ.get(RUNS_ROOT_ENV)
    owner = os.getuid() if hasattr(os, "getuid") else getpass.getuser()  # no getuid on Windows
    root = Path(env) if env else Path(tempfile.gettempdir()) / f"orch-runs-{owner}"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the trials' scratch directory {root} ({e.strerror}): set {RUNS_ROOT_ENV} "
                        "to a node-local directory you can write to") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"the trials' scratch directory {root} is not writable by this user: set {RUNS_ROOT_ENV} to a "
                        "node-local directory you can write to")
    return root


def scratch_run_dir(spec: dict[str, Any], suffix: str = "") -> Path:
    """An empty node-local run directory for this trial (its contents come from the checkpoint, if any).

    Keyed by the sweep's storage path so two sweeps of the same name on one node never share a directory.
    """
    root = runs_root()
    key = hashlib.sha1(f"{spec['storage']}/{spec['sweep']}".encode()).hexdigest()[:10]
    sweep_dir = root / f"{check_name('sweep name', spec['sweep'])}-{key}"
    run_dir = inside(sweep_dir / (check_name("trial_id", spec["trial_id"]) + suffix), sweep_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    return run_dir


def local_data(data: str) -> str:
    """A path ``fit`` can open: local/shared paths as they are; a URI (``s3://...``, ``gs://...``) is copied
    once per node into the scratch root (atomically: a partial copy is never used)."""
    if "://" not in data:
        return data
    import pyarrow.fs as pafs

    root = runs_root() / "data"
    dest = root / hashlib.sha1(data.encode()).hexdigest()[:16]
    if not (dest / "manifest.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
        fs, path = pafs.FileSystem.from_uri(data)
        pafs.copy_files(path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        try:
            os.replace(tmp, dest)
        except OSError:  # another trial on this node finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def _open_tracker(spec: dict[str, Any], plan: TrialPlan):
    t = spec.get("tracking")
    if not t:
        return None
    from orchestrator.tracking import TrialTracker

    tracker = TrialTracker(t["uri"], t["experiment_id"], t["parent_run_id"], plan.trial_id,
                           buffer_dir=t.get("buffer_dir"), sweep_name=spec["sweep"])
    tracker.start(params={**plan.config.to_dict(), "trial_id": plan.trial_id, "sweep": spec["sweep"],
                          "gpus": plan.gpus, "cpus": plan.cpus, "workers": plan.workers})
    return tracker


def train_loop(spec: dict[str, Any], report: Callable[..., None], checkpoint, rank: int = 0) -> dict[str, Any]:
    """Run ``fit`` for one trial and report every epoch plus a final row; returns the final row.

    ``report(metrics, checkpoint=...)`` is ``ray.tune.report`` in-process, ``ray.train.report`` in a Ray Train
    worker; ``checkpoint`` is what ``get_checkpoint()`` returned (None on a fresh start). Only rank 0 tracks
    and checkpoints: the other DDP ranks hold the same weights.
    """
    from ray.train import Checkpoint

    from orchestrator.training import fit

    t_start = time.time()
    plan = TrialPlan.from_dict(spec)
    run_dir = scratch_run_dir(spec, suffix="" if rank == 0 else f"-rank{rank}")
    if checkpoint is not None and rank == 0:
        checkpoint.to_directory(str(run_dir))
        log.info("%s: resuming from checkpoint %s", plan.trial_id, checkpoint.path)
    tracker = _open_tracker(spec, plan) if rank == 0 else None
    t_fit = time.time()

    def on_epoch(rep) -> None:
        if tracker is not None:
            tracker.log_epoch(rep.epoch, rep.metrics)
        # t_report: when this epoch was reported, the order a scheduler saw the trials reach a rung in.
        metrics = epoch_metrics(rep) | {"t_trial_start": t_start, "t_fit_start": t_fit, "t_report": time.time()}
        # The last epoch's checkpoint would be superseded seconds later by the final one (after the test pass):
        # skip that copy of the run directory (a kill in between costs one epoch, not the trial).
        last_epoch = rep.epoch >= plan.config.epochs or rep.status == "diverged"
        keep = rank == 0 and not last_epoch and rep.epoch % plan.checkpoint_every == 0
        report(metrics, checkpoint=Checkpoint.from_directory(str(rep.run_dir)) if keep else None)

    try:
        result = fit(plan.config, local_data(spec["data"]), run_dir, on_epoch=on_epoch)
    except SystemExit:
        # Tune stopped the trial (a scheduler's decision: `report` exits the training thread). Not a failure: the
        # driver marks the child run stopped_early; the epoch's checkpoint already holds this scratch directory.
        shutil.rmtree(inside(run_dir, run_dir.parent), ignore_errors=True)
        raise
    except BaseException as e:
        if tracker is not None:  # mark the child run FAILED while Ray retries the trial (it reattaches then)
            tracker.fail(f"{type(e).__name__}: {e}")
        raise
    if tracker is not None:
        tracker.finish(result)
    row = final_metrics(result, plan) | {"t_trial_start": t_start, "t_fit_start": t_fit}
    if rank == 0:
        # The finished run needs no optimizer state: its final checkpoint (the one Tune keeps) holds best.pt,
        # result.json and the plots, not last.pt, which is the largest file (weights + Adam moments, ~0.8 GB
        # for ResNet152). A trial restored from it finds result.json and returns at once.
        (run_dir / "last.pt").unlink(missing_ok=True)
    report(row, checkpoint=Checkpoint.from_directory(str(run_dir)) if rank == 0 else None)
    shutil.rmtree(inside(run_dir, run_dir.parent), ignore_errors=True)  # node-local scratch: persisted above
    return row


def release_memory() -> None:
    """Hand a finished trial's freed memory back to the OS. glibc keeps freed heap pages (weights, optimizer
    moments, checkpoint buffers of hundreds of MB) for reuse; a process that runs trial after trial otherwise
    grows by each one's high-water mark and fragments."""
    import ctypes
    import gc

    gc.collect()
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator keeps what it keeps
        return
    trim(0)


def _train_worker(spec: dict[str, Any]) -> None:
    """The per-worker loop of the Ray Train path (DDP: Ray has set up the process group; fit is DDP-aware)."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    train_loop(spec, ray.train.report, ray.train.get_checkpoint(), rank=rank)


def run_trial(config: dict[str, Any]) -> None:
    """The Tune function trainable (``config = {"trial": spec}``; spec = ``TrialPlan.to_dict()`` plus
    ``data``, ``sweep``, ``storage``, ``tracking``)."""
    import torch
    from ray import tune

    spec = config[TRIAL_KEY]
    plan = TrialPlan.from_dict(spec)
    if not plan.workers:
        # The trial owns `cpus` cores: as many intra-op threads, so concurrent CPU trials do not oversubscribe.
        torch.set_num_threads(max(1, int(plan.cpus)))
        try:
            train_loop(spec, tune.report, tune.get_checkpoint())
        finally:
            release_memory()  # this process may run the next trial (trial_process_reuse)
        return
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    per_worker = {"CPU": plan.cpus} | ({"GPU": plan.gpus_per_worker} if plan.gpus else {})
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=spec,
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=plan.gpus > 0,
                                     resources_per_worker=per_worker),
        # Same (storage_path, name) on a retry: Ray Train resumes from the run's latest checkpoint.
        # Retries are Tune's job (FailureConfig at trial level), so the trainer itself does not retry.
        run_config=RunConfig(name=plan.trial_id, storage_path=spec["train_storage"],
                             callbacks=[TuneReportCallback()], failure_config=FailureConfig(max_failures=0),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    trainer.fit()
