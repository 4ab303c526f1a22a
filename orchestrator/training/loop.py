"""``fit``: the one training loop, used unchanged by ``orch train`` and by every trial of a sweep.

Per epoch: train on device-resident data (augmented on the device, one host sync for the epoch's loss), score
the validation patients (one host transfer), write ``last.pt`` (and ``best.pt``), then call ``on_epoch``. At the
end: the best checkpoint on the test patients, the per-patient table, plots and ``result.json``.
DDP-aware without Ray: when ``torch.distributed`` is initialised, ranks train on strided shares of the batches,
metrics are all-reduced, and only rank 0 writes files.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from models import create_model
from orchestrator import run_plots
from orchestrator.config import ConfigError, TrainConfig
from orchestrator.training import runs
from orchestrator.training.checkpoint import (
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from orchestrator.training.data import (
    DeviceSplit,
    EpochSampler,
    load_split,
    open_data,
)
from orchestrator.training.inference import evaluate_split, predict_masks
from orchestrator.training.outcome import (
    EpochReport,
    TrainResult,
    read_result,
    write_result,
)
from orchestrator.training.schedule import LRSchedule
from orchestrator.training.step import StepParts, TrainStep, make_train_step, step_parts

log = logging.getLogger(__name__)
OVERLAY_SLICES = 4


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(name: str) -> torch.device:
    """auto -> cuda if available; under DDP on CUDA, this process's GPU (LOCAL_RANK or the current device)."""
    import os

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
        local = os.environ.get("LOCAL_RANK")
        index = int(local) % torch.cuda.device_count() if local is not None else torch.cuda.current_device()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _batches_for_rank(n_batches: int, rank: int, world: int, max_steps: int | None) -> list[int]:
    """Strided share of the epoch's batches; every rank gets the same count (DDP collectives must match)."""
    per_rank = max(1, n_batches // world)
    if max_steps is not None:
        per_rank = min(per_rank, max_steps)
    return [(rank + i * world) % n_batches for i in range(per_rank)]



@dataclass
class BestSoFar:
    """The best epoch so far (highest validation dice_volume_mean): its score, validation metrics, per-patient
    table and a copy of its weights, which the test evaluation and the overlay use at the end."""

    metric: float = -math.inf
    epoch: int | None = None
    state: dict[str, torch.Tensor] | None = None
    val: dict[str, float] = field(default_factory=dict)
    pp: list[dict[str, Any]] = field(default_factory=list)

    def beaten_by(self, metrics: dict[str, float]) -> bool:
        """Higher dice_volume_mean wins; ties (e.g. 0 while the model still predicts nothing) go to lower val_loss."""
        new = (metrics["dice_volume_mean"], -metrics["val_loss"])
        return new > (self.metric, -self.val.get("val_loss", math.inf))

    def take(self, epoch: int, metrics: dict[str, float], pp: list[dict[str, Any]], model: nn.Module) -> None:
        self.metric, self.epoch, self.val, self.pp = metrics["dice_volume_mean"], epoch, dict(metrics), pp
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, ckpt: dict[str, Any], device: torch.device) -> None:
        """The best so far as stored in a best.pt checkpoint ``ckpt`` (weights moved to ``device``)."""
        self.metric, self.epoch = ckpt["best_metric"], ckpt["best_epoch"]
        self.val, self.pp = ckpt["extra"]["best_val"], ckpt["extra"]["val_per_patient"]
        self.state = {k: v.to(device) for k, v in ckpt["model"].items()}


@dataclass
class _Run:
    """One fit's state, built before its first epoch: what the epochs, the checkpoints and the finish share."""

    cfg: TrainConfig
    data: Any
    run_dir: Path
    rank: int
    world: int
    device: torch.device
    model: nn.Module  # the bare model (under DDP the step trains its wrapper)
    parts: StepParts
    train: DeviceSplit
    val: DeviceSplit
    step: TrainStep
    sampler: EpochSampler
    schedule: LRSchedule
    evaluate: Callable[..., tuple[dict[str, float], list[dict[str, Any]]]]
    batch_size: int
    steps_per_epoch: int
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: BestSoFar = field(default_factory=BestSoFar)


def fit(cfg: TrainConfig, data: Any, run_dir: str | Path,
        on_epoch: Callable[[EpochReport], None] | None = None, force: bool = False) -> TrainResult:
    """Train ``cfg`` on prepared ``data`` (a directory or a PreparedData) into ``run_dir``; see the module doc.

    Resumes from ``run_dir/last.pt``; returns the stored result if ``run_dir/result.json`` exists. Either only when
    the run stored there is this configuration on these patients (``runs.identity``): another one raises
    ConfigError naming the differing fields, or with ``force`` is deleted (orch's files only) and trained afresh.
    A non-finite loss ends the run with status "diverged" (never raises)."""
    run_dir = Path(run_dir)
    rank, world = _dist()
    device = resolve_device(cfg.device)
    data = open_data(data, cfg)
    stored = _claim(cfg, data, run_dir, rank, force)
    if stored is not None:
        return stored
    run = _start(cfg, data, run_dir, device, rank, world)
    status = _run_epochs(run, on_epoch)
    result = _finish(run, status)
    amp_dtype = run.parts.amp_dtype
    result.extra.update(device=str(device), amp=str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
                        cuda_graph=run.step.mode, step_timings_ms=run.step.timings, world_size=world,
                        train_slices=len(run.train), val_slices=len(run.val))
    if rank == 0:
        write_result(result)
    return result


def _claim(cfg: TrainConfig, data: Any, run_dir: Path, rank: int, force: bool) -> TrainResult | None:
    """Claim ``run_dir`` for this run (``runs.claim``; ConfigError if it holds another one); the stored result if
    the run there already finished. Rank 0's run_dir is the one that counts (other ranks may be given scratch
    dirs): its files decide."""
    wanted = runs.identity(cfg, data)
    problem = _from_rank0(runs.claim(run_dir, wanted, force) if rank == 0 else None)
    if problem:
        raise ConfigError(problem)
    if _from_rank0(rank == 0 and (run_dir / "result.json").exists()):
        log.info("%s already finished: returning its result", run_dir)
        stored = _from_rank0(read_result(run_dir).to_dict() if rank == 0 else None)
        return TrainResult.from_dict({**stored, "run_dir": str(run_dir)})
    return None


def _start(cfg: TrainConfig, data: Any, run_dir: Path, device: torch.device, rank: int, world: int) -> _Run:
    """Model, optimizer and friends (restored from ``last.pt`` when there is one), data on the device, the step,
    the sampler, the lr schedule and the evaluation: everything the first epoch needs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = create_model(cfg.model).to(device).to(memory_format=torch.channels_last)
    parts = step_parts(model, cfg, device)
    best = BestSoFar()
    torch.manual_seed(cfg.seed + rank)
    start_epoch, history = _resume(run_dir, model, parts, best, rank, cfg.seed)
    train = load_split(data, "train", device, cfg.image_size)
    val = load_split(data, "val", device, cfg.image_size, cfg.max_eval_slices)
    bsz = min(cfg.batch_size, len(train))
    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    steps_per_epoch = len(_batches_for_rank(len(train) // bsz, rank, world, cfg.max_steps))
    evaluate = functools.partial(evaluate_split, loss_fn=parts.loss_fn, amp_dtype=parts.amp_dtype,
                                 batch_size=cfg.eval_batch_size, rank=rank, world=world, tta=cfg.tta,
                                 min_component=cfg.min_component)
    return _Run(cfg=cfg, data=data, run_dir=run_dir, rank=rank, world=world, device=device, model=model, parts=parts,
                train=train, val=val, step=make_train_step(cfg, parts, train_model, train, device, world),
                sampler=EpochSampler(train, cfg.sampling, cfg.tumour_fraction, cfg.seed),
                schedule=LRSchedule(parts.optimizer, cfg.lr, cfg.schedule, cfg.warmup_epochs, cfg.epochs,
                                    steps_per_epoch),
                evaluate=evaluate, batch_size=bsz, steps_per_epoch=steps_per_epoch, start_epoch=start_epoch,
                history=history, best=best)


def _run_epochs(run: _Run, on_epoch: Callable[[EpochReport], None] | None) -> str:
    """Train, validate, checkpoint and report every remaining epoch; the run's status ("finished" or "diverged")."""
    for epoch in range(run.start_epoch + 1, run.cfg.epochs + 1):
        t0 = time.perf_counter()
        metrics = _train_epoch(run, epoch, t0)
        loss = metrics["loss"]
        if math.isfinite(loss):
            val_metrics, val_pp = run.evaluate(run.model, run.val)
            metrics.update(val_metrics)
        if not (math.isfinite(loss) and math.isfinite(metrics["val_loss"])):
            _diverged(run, epoch, metrics, t0, on_epoch)
            return "diverged"
        is_best = run.best.beaten_by(metrics)
        if is_best:
            run.best.take(epoch, metrics, val_pp, run.model)
        metrics["epoch_time_s"] = time.perf_counter() - t0
        run.history.append({"epoch": epoch, **metrics})
        if run.rank == 0:
            _save(run, epoch, is_best)
        log.info("epoch %d/%d loss %.4f val_loss %.4f dice_volume_mean %.4f %.0f img/s%s", epoch, run.cfg.epochs,
                 loss, metrics["val_loss"], metrics["dice_volume_mean"], metrics["img_per_s"], " *" if is_best else "")
        if on_epoch:
            on_epoch(EpochReport(epoch, metrics, is_best, run.run_dir, "running", run.rank))
    return "finished"


def _train_epoch(run: _Run, epoch: int, t0: float) -> dict[str, float]:
    """One epoch's optimizer steps on this rank's share of the batches; the training metrics (one host sync)."""
    run.model.train()
    run.step.reset()
    bsz = run.batch_size
    # The order of batches depends only on (seed, epoch): identical on every rank and after a resume.
    perm = run.sampler.order(epoch).to(run.device)
    mine = _batches_for_rank(len(run.train) // bsz, run.rank, run.world, run.cfg.max_steps)
    for i, b in enumerate(mine):
        run.schedule((epoch - 1) * run.steps_per_epoch + i)
        run.step(perm[b * bsz : (b + 1) * bsz])
    totals = torch.stack([run.step.loss_sum.double(), torch.tensor(float(len(mine)), device=run.device).double()])
    if run.world > 1:
        dist.all_reduce(totals)
    loss = float((totals[0] / totals[1]).item())  # the training phase's one host sync
    train_s = time.perf_counter() - t0
    return {"loss": loss, "it_per_s": len(mine) / train_s, "img_per_s": len(mine) * run.world * bsz / train_s,
            "learning_rate": run.schedule.last_lr}


def _diverged(run: _Run, epoch: int, metrics: dict[str, float], t0: float,
              on_epoch: Callable[[EpochReport], None] | None) -> None:
    """Record and report the epoch whose train or validation loss is not finite (the run stops after it)."""
    metrics["epoch_time_s"] = time.perf_counter() - t0
    run.history.append({"epoch": epoch, **metrics})
    log.warning("epoch %d: non-finite loss (train %s, val %s): run diverged, stopping", epoch, metrics["loss"],
                metrics.get("val_loss"))
    if on_epoch:
        on_epoch(EpochReport(epoch, metrics, False, run.run_dir, "diverged", run.rank))


def _save(run: _Run, epoch: int, is_best: bool) -> None:
    """``last.pt`` (everything a resume needs) and, after a best epoch, ``best.pt`` first (weights and configs)."""
    cfg, best, model, scaler = run.cfg, run.best, run.model, run.parts.scaler
    common = {"model_config": cfg.model.to_dict(), "train_config": cfg.to_dict(), "epoch": epoch,
              "best_metric": best.metric, "best_epoch": best.epoch, "history": run.history}
    if is_best:  # weights and configs only: what predict and the test evaluation need
        save_checkpoint(run.run_dir / "best.pt", model=model.state_dict(), optimizer=None, scaler=None, rng=None,
                        extra={"best_val": best.val, "val_per_patient": best.pp}, **common)
    save_checkpoint(run.run_dir / "last.pt", model=model.state_dict(), optimizer=run.parts.optimizer.state_dict(),
                    scaler=scaler.state_dict() if scaler else None, rng=rng_state(), extra={}, **common)


def _from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a broadcast under DDP; the identity otherwise). All ranks must call it."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _resume(run_dir: Path, model: nn.Module, parts: StepParts, best: BestSoFar, rank: int,
            seed: int) -> tuple[int, list]:
    """Restore model, optimizer, scaler, RNG and the best-so-far from ``run_dir``'s last.pt and best.pt; the
    completed epochs and their history ((0, []) when there is no last.pt: a fresh run)."""
    last = _from_rank0(read_checkpoint(run_dir / "last.pt") if rank == 0 and (run_dir / "last.pt").exists() else None)
    if last is None:
        return 0, []
    b = _from_rank0(read_checkpoint(run_dir / "best.pt") if rank == 0 and (run_dir / "best.pt").exists() else None)
    model.load_state_dict(last["model"])
    parts.optimizer.load_state_dict(last["optimizer"])
    if parts.scaler is not None and last.get("scaler"):
        parts.scaler.load_state_dict(last["scaler"])
    if rank == 0:
        set_rng_state(last["rng"])
    else:
        torch.manual_seed(seed + rank + 7919 * last["epoch"])
    if b is not None:
        # best.pt is written just before last.pt: after a kill between the two it may be one epoch newer than
        # last.pt; it is still a real model with its own validation score, so it stays the best so far.
        best.restore(b, next(model.parameters()).device)
    log.info("resuming %s after epoch %d", run_dir, int(last["epoch"]))
    return int(last["epoch"]), list(last["history"])


def _finish(run: _Run, status: str) -> TrainResult:
    """Test metrics with the best checkpoint, per-patient table, plots."""
    cfg, best = run.cfg, run.best
    test: dict[str, float] = {}
    per_patient: list[dict[str, Any]] = [{"split": "val", **r} for r in best.pp]
    if best.state is not None:
        run.model.load_state_dict(best.state)
        if len(run.data.patients("test")):
            # A cross-validation fold scores every test patient: the folds together must cover the data set.
            max_slices = None if cfg.folds else cfg.max_eval_slices
            test_split = load_split(run.data, "test", run.device, None, max_slices)  # native masks: scored as predict
            test, test_pp = run.evaluate(run.model, test_split, image_size=cfg.image_size, baseline=True)
            test = {("test_loss" if k == "val_loss" else k): v for k, v in test.items()}
            per_patient += [{"split": "test", **r} for r in test_pp]
        if run.rank == 0:
            _overlay(run.model, run.val, run.device, run.parts.amp_dtype, run.run_dir / "overlay.png", cfg.tta)
    history = run.history
    if run.rank == 0 and history:
        run_plots.learning_curve(history, run.run_dir / "learning_curve.png")
    return TrainResult(status=status, epochs_completed=len(history) if status == "finished" else len(history) - 1,
                       best_epoch=best.epoch, best_val=best.val, test=test, per_patient=per_patient,
                       history=history, run_dir=run.run_dir)


def _overlay(model, val: DeviceSplit, device, amp_dtype, path: Path, tta: bool) -> None:
    """The validation slices with the most tumour: image, truth, best-model prediction."""
    area = val.masks.sum(dim=(1, 2)).cpu().numpy()
    pick = np.sort(np.argsort(-area, kind="stable")[:OVERLAY_SLICES])
    images = val.images[torch.as_tensor(pick, device=device)].cpu().numpy()
    probs = predict_masks(model, images, device, amp_dtype=amp_dtype, tta=tta)
    titles = [f"{val.patients[i]}#{val.slices[i]}" for i in pick]
    run_plots.overlay(images, val.masks[torch.as_tensor(pick, device=device)].cpu().numpy(), probs >= 0.5, titles, path)
