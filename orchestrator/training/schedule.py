"""Per-step learning rate: linear warm-up, then constant, cosine to zero, or poly (nnU-Net's (1 - t)^0.9).

The rate is a function of the global optimizer step alone (``(epoch - 1) * steps_per_epoch + i``), so a resumed
run continues on the same curve without storing any scheduler state. On CUDA the optimizers hold the rate as a
device tensor (``make_optimizer``) and ``set_lr`` fills it in place: a captured step reads the new value on
replay, with no host sync and no recapture.
"""

from __future__ import annotations

import math

import torch

POLY_EXPONENT = 0.9


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """The multiplier of the base lr at 0-based ``step`` of ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "poly":
        return (1.0 - t) ** POLY_EXPONENT
    raise ValueError(f"unknown schedule {schedule!r}; choose constant, cosine or poly")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr: in place for a tensor lr (captured steps read it on replay), else assign."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class LRSchedule:
    """``schedule(step)`` sets the optimizer's lr for 0-based global ``step``; a no-op for a constant rate
    without warm-up (the paper's setting), so that path is exactly the old one."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, schedule: str, warmup_epochs: float,
                 epochs: int, steps_per_epoch: int):
        self.optimizer, self.base_lr, self.schedule = optimizer, base_lr, schedule
        self.total = max(1, epochs * steps_per_epoch)
        self.warmup = int(round(warmup_epochs * steps_per_epoch))
        self.active = not (schedule == "constant" and self.warmup == 0)
        self.last_lr = base_lr

    def __call__(self, step: int) -> None:
        if self.active:
            self.last_lr = self.base_lr * lr_factor(self.schedule, step, self.total, self.warmup)
            set_lr(self.optimizer, self.last_lr)
