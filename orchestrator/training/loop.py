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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

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
    BatchMaker,
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
from orchestrator.training.step import TrainStep, make_loss, make_optimizer, resolve_amp

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
    wanted = runs.identity(cfg, data)
    # Rank 0's run_dir is the one that counts (other ranks may be given scratch dirs): its files decide.
    problem = _from_rank0(runs.claim(run_dir, wanted, force) if rank == 0 else None)
    if problem:
        raise ConfigError(problem)
    if _from_rank0(rank == 0 and (run_dir / "result.json").exists()):
        log.info("%s already finished: returning its result", run_dir)
        stored = _from_rank0(read_result(run_dir).to_dict() if rank == 0 else None)
        return TrainResult.from_dict({**stored, "run_dir": str(run_dir)})
    run_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = create_model(cfg.model).to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), cfg, device)
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda") if (amp_dtype == torch.float16 and device.type == "cuda") else None
    loss_fn = make_loss(cfg.loss)

    start_epoch, history, best = 0, [], {"metric": -math.inf, "epoch": None, "state": None, "val": {}, "pp": []}
    torch.manual_seed(cfg.seed + rank)
    last = _from_rank0(read_checkpoint(run_dir / "last.pt") if rank == 0 and (run_dir / "last.pt").exists() else None)
    if last is not None:
        best_ckpt = _from_rank0(read_checkpoint(run_dir / "best.pt") if rank == 0 and (run_dir / "best.pt").exists()
                                else None)
        start_epoch, history = _resume(last, best_ckpt, model, optimizer, scaler, best, rank, cfg.seed)
        log.info("resuming %s after epoch %d", run_dir, start_epoch)

    train = load_split(data, "train", device, cfg.image_size)
    val = load_split(data, "val", device, cfg.image_size, cfg.max_eval_slices)
    bsz = min(cfg.batch_size, len(train))
    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    batch_fn = BatchMaker(train, geometric=cfg.augment, intensity=cfg.intensity_aug)
    mode = cfg.cuda_graph if world == 1 else "eager"  # DDP all-reduces are not captured here
    step = TrainStep(train_model, optimizer, loss_fn, batch_fn, device, amp_dtype, scaler, mode=mode)
    sampler = EpochSampler(train, cfg.sampling, cfg.tumour_fraction, cfg.seed)
    steps_per_epoch = len(_batches_for_rank(len(train) // bsz, rank, world, cfg.max_steps))
    schedule = LRSchedule(optimizer, cfg.lr, cfg.schedule, cfg.warmup_epochs, cfg.epochs, steps_per_epoch)
    evaluate = functools.partial(evaluate_split, loss_fn=loss_fn, amp_dtype=amp_dtype, batch_size=cfg.eval_batch_size,
                                 rank=rank, world=world, tta=cfg.tta, min_component=cfg.min_component)

    status = "finished"
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        step.reset()
        # The order of batches depends only on (seed, epoch): identical on every rank and after a resume.
        perm = sampler.order(epoch).to(device)
        mine = _batches_for_rank(len(train) // bsz, rank, world, cfg.max_steps)
        for i, b in enumerate(mine):
            schedule((epoch - 1) * steps_per_epoch + i)
            step(perm[b * bsz : (b + 1) * bsz])
        totals = torch.stack([step.loss_sum.double(), torch.tensor(float(len(mine)), device=device).double()])
        if world > 1:
            dist.all_reduce(totals)
        loss = float((totals[0] / totals[1]).item())  # the training phase's one host sync
        train_s = time.perf_counter() - t0
        metrics: dict[str, float] = {"loss": loss, "it_per_s": len(mine) / train_s,
                                     "img_per_s": len(mine) * world * bsz / train_s, "learning_rate": schedule.last_lr}
        is_best = False
        if math.isfinite(loss):
            val_metrics, val_pp = evaluate(model, val)
            metrics.update(val_metrics)
        if not (math.isfinite(loss) and math.isfinite(metrics["val_loss"])):
            status = "diverged"
            metrics["epoch_time_s"] = time.perf_counter() - t0
            history.append({"epoch": epoch, **metrics})
            log.warning("epoch %d: non-finite loss (train %s, val %s): run diverged, stopping", epoch, loss,
                        metrics.get("val_loss"))
            if on_epoch:
                on_epoch(EpochReport(epoch, metrics, False, run_dir, "diverged", rank))
            break
        if _better(metrics, best):
            is_best = True
            best.update(metric=metrics["dice_volume_mean"], epoch=epoch, val=dict(metrics), pp=val_pp,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})
        metrics["epoch_time_s"] = time.perf_counter() - t0
        history.append({"epoch": epoch, **metrics})
        if rank == 0:
            _save(run_dir, cfg, model, optimizer, scaler, epoch, history, best, is_best)
        log.info("epoch %d/%d loss %.4f val_loss %.4f dice_volume_mean %.4f %.0f img/s%s", epoch, cfg.epochs,
                 loss, metrics["val_loss"], metrics["dice_volume_mean"], metrics["img_per_s"], " *" if is_best else "")
        if on_epoch:
            on_epoch(EpochReport(epoch, metrics, is_best, run_dir, "running", rank))

    result = _finish(cfg, data, run_dir, model, device, amp_dtype, evaluate, val, history, best, status, rank)
    result.extra.update(device=str(device), amp=str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
                        cuda_graph=step.mode, step_timings_ms=step.timings, world_size=world,
                        train_slices=len(train), val_slices=len(val))
    if rank == 0:
        write_result(result)
    return result


def _better(metrics: dict[str, float], best: dict) -> bool:
    """Higher dice_volume_mean wins; ties (e.g. 0 while the model still predicts nothing) go to lower val_loss."""
    new = (metrics["dice_volume_mean"], -metrics["val_loss"])
    return new > (best["metric"], -best["val"].get("val_loss", math.inf))


def _save(run_dir: Path, cfg: TrainConfig, model, optimizer, scaler, epoch: int, history: list, best: dict,
          is_best: bool) -> None:
    common = {"model_config": cfg.model.to_dict(), "train_config": cfg.to_dict(), "epoch": epoch,
              "best_metric": best["metric"], "best_epoch": best["epoch"], "history": history}
    if is_best:  # weights and configs only: what predict and the test evaluation need
        save_checkpoint(run_dir / "best.pt", model=model.state_dict(), optimizer=None, scaler=None, rng=None,
                        extra={"best_val": best["val"], "val_per_patient": best["pp"]}, **common)
    save_checkpoint(run_dir / "last.pt", model=model.state_dict(), optimizer=optimizer.state_dict(),
                    scaler=scaler.state_dict() if scaler else None, rng=rng_state(), extra={}, **common)


def _from_rank0(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a broadcast under DDP; the identity otherwise). All ranks must call it."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _resume(last: dict, b: dict | None, model, optimizer, scaler, best: dict, rank: int,
            seed: int) -> tuple[int, list]:
    """Restore model, optimizer, scaler, RNG and the best-so-far from checkpoints ``last`` and ``b`` (best.pt)."""
    model.load_state_dict(last["model"])
    optimizer.load_state_dict(last["optimizer"])
    if scaler is not None and last.get("scaler"):
        scaler.load_state_dict(last["scaler"])
    if rank == 0:
        set_rng_state(last["rng"])
    else:
        torch.manual_seed(seed + rank + 7919 * last["epoch"])
    if b is not None:
        # best.pt is written just before last.pt: after a kill between the two it may be one epoch newer than
        # last.pt; it is still a real model with its own validation score, so it stays the best so far.
        dev = next(model.parameters()).device
        best.update(metric=b["best_metric"], epoch=b["best_epoch"], val=b["extra"]["best_val"],
                    pp=b["extra"]["val_per_patient"], state={k: v.to(dev) for k, v in b["model"].items()})
    return int(last["epoch"]), list(last["history"])


def _finish(cfg, data, run_dir, model, device, amp_dtype, evaluate, val: DeviceSplit, history, best, status,
            rank) -> TrainResult:
    """Test metrics with the best checkpoint, per-patient table, plots."""
    test: dict[str, float] = {}
    per_patient: list[dict[str, Any]] = [{"split": "val", **r} for r in best["pp"]]
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        if len(data.patients("test")):
            # A cross-validation fold scores every test patient: the folds together must cover the data set.
            test_split = load_split(data, "test", device, cfg.image_size, None if cfg.folds else cfg.max_eval_slices)
            test, test_pp = evaluate(model, test_split)
            test = {("test_loss" if k == "val_loss" else k): v for k, v in test.items()}
            per_patient += [{"split": "test", **r} for r in test_pp]
        if rank == 0:
            _overlay(model, val, device, amp_dtype, run_dir / "overlay.png", cfg.tta)
    if rank == 0 and history:
        run_plots.learning_curve(history, run_dir / "learning_curve.png")
    return TrainResult(status=status, epochs_completed=len(history) if status == "finished" else len(history) - 1,
                       best_epoch=best["epoch"], best_val=best["val"], test=test, per_patient=per_patient,
                       history=history, run_dir=run_dir)


def _overlay(model, val: DeviceSplit, device, amp_dtype, path: Path, tta: bool) -> None:
    """The validation slices with the most tumour: image, truth, best-model prediction."""
    area = val.masks.sum(dim=(1, 2)).cpu().numpy()
    pick = np.sort(np.argsort(-area, kind="stable")[:OVERLAY_SLICES])
    images = val.images[torch.as_tensor(pick, device=device)].cpu().numpy()
    probs = predict_masks(model, images, device, amp_dtype=amp_dtype, tta=tta)
    titles = [f"{val.patients[i]}#{val.slices[i]}" for i in pick]
    run_plots.overlay(images, val.masks[torch.as_tensor(pick, device=device)].cpu().numpy(), probs >= 0.5, titles, path)
