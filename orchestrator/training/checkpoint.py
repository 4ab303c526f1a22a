"""Self-describing checkpoints: weights plus everything that rebuilds the model and resumes the run.

Keys: ``format``, ``model_config`` and ``train_config`` (dicts), ``epoch`` (completed epochs), ``model``,
``optimizer``, ``scaler`` (state dicts or None), ``rng`` (torch CPU/CUDA, numpy, python), ``best_metric``,
``best_epoch``, ``history`` (per-epoch metric dicts), ``extra`` (run facts such as the per-patient table of the
best epoch). Written atomically (temp file + rename), so a kill mid-write leaves the previous checkpoint.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import create_model
from orchestrator.config import ModelConfig, TrainConfig

# 2: the model's ``head_relu`` is stored. A format-1 checkpoint predates it and was trained with the ReLU in front of
# the head (segmentation_models_pytorch's U-Net), so it is read as ``head_relu=True``: same state-dict keys, and a
# model rebuilt without the ReLU would load silently and predict differently.
FORMAT = 2


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, **content: Any) -> None:
    """``torch.save`` to ``path`` atomically; ``content`` holds the keys of the module docstring."""
    content = {"format": FORMAT, **content}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(content, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist; pass a last.pt or best.pt from a run directory")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say which and what to do
        raise ValueError(f"checkpoint {p} cannot be read ({e}); it is damaged or not an orch checkpoint") from e
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"checkpoint {p} is not an orch checkpoint (no model_config/model); use a run's best.pt")
    return upgrade_checkpoint(ckpt)


def upgrade_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Bring an older format's configs to today's meaning (in place; returns ``ckpt``)."""
    if ckpt.get("format", 1) < 2:
        for key in ("model_config", "train_config"):
            if isinstance(ckpt.get(key), dict):
                ckpt[key].setdefault("head_relu", True)
    return ckpt


def load_checkpoint(path: str | Path) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Rebuild a trained model from a checkpoint alone: (model in eval mode on the CPU, its TrainConfig,
    the checkpoint dict)."""
    ckpt = read_checkpoint(path)
    model = create_model(ModelConfig.from_dict(ckpt["model_config"]).replace(weights=None))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, TrainConfig.from_dict(ckpt["train_config"]), ckpt
