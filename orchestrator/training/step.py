"""The training step: losses on logits, optimizers, mixed precision, and capture of the whole step as a CUDA graph.

``TrainStep(idx)`` runs one optimizer step on the batch ``idx`` (a (B,) int64 device tensor) and adds the loss
to ``step.loss_sum`` on the device -- nothing is read back per step. With ``cuda_graph`` on (or auto and faster)
the gather, augmentation, forward, backward and optimizer update are replayed from one captured graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from orchestrator.training.data import BatchMaker, DeviceSplit

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_WARMUP_STEPS = 3  # eager steps on a side stream before capture (lazy inits, cudnn autotuning)
_PROBE_STEPS = 6  # steps timed eager, then captured, when cuda_graph="auto"


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - Dice of sigmoid(logits) against the target, pixels pooled over the batch (B, 1, H, W)."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    return 1.0 - (2.0 * inter + smooth) / (p.sum() + target.sum() + smooth)


def make_loss(name: str) -> LossFn:
    """``bce`` (pixel-mean BCE with logits: the paper's loss), ``dice`` or ``bce_dice``; all take float32 logits."""
    if name == "bce":
        return F.binary_cross_entropy_with_logits
    if name == "dice":
        return soft_dice_loss
    if name == "bce_dice":
        return lambda lg, t: F.binary_cross_entropy_with_logits(lg, t) + soft_dice_loss(lg, t)
    raise ValueError(f"unknown loss {name!r}; choose bce, dice or bce_dice")


def make_optimizer(params, cfg, device: torch.device) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD (momentum ``cfg.momentum``) / RMSprop; fused kernels on CUDA (capturable, so the step can
    be captured) and on the CPU. With an lr schedule on CUDA the rate is a device tensor, so ``schedule.set_lr`` can
    change it between replays of a captured step."""
    cuda = device.type == "cuda"
    scheduled = cfg.schedule != "constant" or cfg.warmup_epochs > 0
    lr = torch.tensor(cfg.lr, device=device) if (cuda and scheduled) else cfg.lr
    common = {"lr": lr, "weight_decay": cfg.weight_decay}
    # Fused kernels on CUDA and the CPU: on the CPU one Adam step of a ResNet152-UNet (67 M parameters, 1 thread)
    # takes 86 ms fused, 302 ms foreach and ~4x that as torch's default per-tensor loop (BENCHMARKS.md, "Training").
    multi = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, **common, **multi, capturable=cuda)
    if cfg.optimizer == "adamw":  # decoupled weight decay (Loshchilov & Hutter)
        return torch.optim.AdamW(params, **common, **multi, capturable=cuda)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, **common, momentum=cfg.momentum, **multi)
    if cfg.optimizer == "rmsprop":  # no fused RMSprop: foreach, capturable on CUDA
        return torch.optim.RMSprop(params, **common, capturable=cuda, foreach=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adam, adamw, sgd or rmsprop")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 where supported, fp16 on older GPUs, none (fp32) on CPU unless asked for."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    # cache_enabled=False: the weight-cast cache must not outlive a captured graph
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def capture(fn: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any]:
    """``fn()`` run once on a side stream (lazy inits, cudnn autotuning), then captured as a CUDA graph: (the graph,
    the captured call's output, whose tensors every ``graph.replay()`` refills in place)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def step_mode(cuda_graph: str) -> str:
    """TrainConfig.cuda_graph (auto | on | off) or a step mode (auto | graph | eager) -> the step mode."""
    mode = {"on": "graph", "off": "eager"}.get(cuda_graph, cuda_graph)
    if mode not in ("auto", "graph", "eager"):
        raise ValueError(f"cuda_graph={cuda_graph!r} is not valid; choose auto, on or off")
    return mode


class TrainStep:
    """One optimizer step per call; ``mode`` is "eager"/"off", "graph"/"on" or "auto" (probe both, keep the faster).

    ``batch_fn(idx, augment=True)`` -> (x, y) must run on the device only. ``loss_sum`` (float32 scalar on the
    device) accumulates the loss of every step; ``reset()`` zeroes it."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                 batch_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                 amp_dtype: torch.dtype | None, scaler: torch.amp.GradScaler | None, mode: str = "eager"):
        self.model, self.optimizer, self.loss_fn, self.batch_fn = model, optimizer, loss_fn, batch_fn
        self.device, self.amp_dtype, self.scaler = device, amp_dtype, scaler
        mode = step_mode(mode)
        if mode != "eager" and (device.type != "cuda" or scaler is not None):
            # GradScaler reads found-inf on the host each step: not capturable; CPU has no graphs
            log.info("CUDA graph capture unavailable (%s); running eager", "fp16 scaler" if scaler else device.type)
            mode = "eager"
        self.mode = mode
        self.loss_sum = torch.zeros((), device=device)
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_idx: torch.Tensor | None = None
        self._events: list[torch.cuda.Event] = []
        self.timings: dict[str, Any] = {}

    def reset(self) -> None:
        self.loss_sum.zero_()

    def _body(self, idx: torch.Tensor) -> None:
        x, y = self.batch_fn(idx, augment=True)
        with autocast(self.device, self.amp_dtype):
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.loss_sum += loss.detach()

    def _eager(self, idx: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._body(idx)

    def _side_stream_eager(self, idx: torch.Tensor) -> None:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            self._eager(idx)
        torch.cuda.current_stream().wait_stream(s)

    def _capture(self, idx: torch.Tensor) -> bool:
        """Capture ``_body`` on a static copy of ``idx``; on failure fall back to eager for good (returns False)."""
        self.static_idx = idx.clone()
        self.optimizer.zero_grad(set_to_none=True)  # grads are then allocated inside the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                self._body(self.static_idx)
        except Exception as e:  # an op that cannot be captured: the run goes on, eager
            log.warning("CUDA graph capture failed (%s: %s); running the step eager", type(e).__name__, e)
            self.graph, self.static_idx, self.mode = None, None, "eager"
            self.timings["capture_error"] = f"{type(e).__name__}: {e}"[:300]
            torch.cuda.synchronize()
            return False
        log.info("captured the training step as a CUDA graph")
        return True

    def _event(self) -> None:
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        self._events.append(e)

    def __call__(self, idx: torch.Tensor) -> None:
        """One step on the batch ``idx`` ((B,) int64 on the device; B fixed for the life of a captured graph)."""
        self.calls += 1
        probe_step = self.calls - _WARMUP_STEPS  # 1-based step of the auto probe
        if self.graph is not None and len(idx) == len(self.static_idx):
            self.static_idx.copy_(idx)
            self.graph.replay()
            if self.mode == "auto" and probe_step == 2 * _PROBE_STEPS:
                self._event()
                self._decide()
        elif self.mode == "eager" or self.graph is not None:
            self._eager(idx)
        elif self.calls <= _WARMUP_STEPS:
            self._side_stream_eager(idx)
        elif self.mode == "graph":
            if self._capture(idx):
                self.graph.replay()  # capture records without running: run this step now
            else:
                self._eager(idx)
        else:  # auto: time _PROBE_STEPS eager steps, then as many graph replays (capture excluded)
            if probe_step == 1:
                self._event()
            self._eager(idx)
            if probe_step == _PROBE_STEPS:
                self._event()
                if self._capture(idx):
                    self._event()

    def _decide(self) -> None:
        self._events[-1].synchronize()  # the one host sync of the probe
        eager = self._events[0].elapsed_time(self._events[1]) / _PROBE_STEPS
        graph = self._events[2].elapsed_time(self._events[3]) / _PROBE_STEPS
        self.timings = {"eager_ms": eager, "graph_ms": graph}
        if graph < 0.97 * eager:
            self.mode = "graph"
            log.info("cuda_graph=auto: graph %.2f ms/step vs eager %.2f ms/step: keeping the graph", graph, eager)
        else:
            self.mode = "eager"
            self.graph, self.static_idx = None, None
            log.info("cuda_graph=auto: graph %.2f ms/step vs eager %.2f ms/step: running eager", graph, eager)


@dataclass
class StepParts:
    """What a configuration's step is made of besides the model and its data. Built before a resume, which restores
    the optimizer's and the scaler's state into these objects."""

    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None


def step_parts(model: nn.Module, cfg, device: torch.device) -> StepParts:
    """``cfg``'s optimizer over ``model``'s parameters, its loss and autocast dtype, and a GradScaler where fp16
    autocast runs on CUDA (bf16 and fp32 need none)."""
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda") if (amp_dtype == torch.float16 and device.type == "cuda") else None
    return StepParts(make_optimizer(model.parameters(), cfg, device), make_loss(cfg.loss), amp_dtype, scaler)


def make_train_step(cfg, parts: StepParts, model: nn.Module, split: DeviceSplit, device: torch.device,
                    world: int = 1) -> TrainStep:
    """The training step ``fit`` runs (and ``orch bench`` measures): ``cfg``'s augmentations of ``split`` gathered
    on the device, ``parts``, and ``cfg.cuda_graph`` -- eager under DDP, whose all-reduces are not captured here.
    ``model`` is the module the step trains (the DDP wrapper under DDP)."""
    batch_fn = BatchMaker(split, geometric=cfg.augment, intensity=cfg.intensity_aug)
    mode = cfg.cuda_graph if world == 1 else "eager"
    return TrainStep(model, parts.optimizer, parts.loss_fn, batch_fn, device, parts.amp_dtype, parts.scaler,
                     mode=mode)
