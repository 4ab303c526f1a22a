"""Helpers shared by the training tests (a module with a unique name: every test area has a conftest.py, so
``from conftest import ...`` would pick whichever was imported first)."""

from __future__ import annotations

from orchestrator.config import TrainConfig


def tiny_cfg(**changes) -> TrainConfig:
    base = TrainConfig(encoder="resnet18", epochs=1, batch_size=4, image_size=32, max_steps=2, max_eval_slices=24,
                       lr=1e-3, device="cpu", eval_batch_size=32)
    return base.replace(**changes)
