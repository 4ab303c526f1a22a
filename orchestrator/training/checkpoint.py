"""Self-describing checkpoints: weights plus everything that rebuilds the model and resumes the run.

Keys: ``format``, ``model_config`` and ``train_config`` (dicts), ``epoch`` (completed epochs), ``model``,
``optimizer``, ``scaler`` (state dicts or None), ``rng`` (torch CPU/CUDA, numpy, python), ``best_metric``,
``best_epoch``, ``history`` (per-epoch metric dicts), ``extra`` (run facts such as the per-patient table of the
best epoch). Written atomically (``orchestrator.files.atomic_write``), so a kill mid-write leaves the previous
checkpoint.

Reading never unpickles an object: ``torch.load(weights_only=True)`` admits tensors, containers and plain values
only, so a file carrying a pickle payload (a ``__reduce__`` that runs code) is refused before anything of it runs.
Everything orch writes is of those types (the RNG states are stored as tensors and lists, format 3); the numpy
arrays of older checkpoints' RNG states are admitted by name (``_LEGACY_GLOBALS``) and nothing else is.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import create_model
from orchestrator.config import ModelConfig, TrainConfig
from orchestrator.errors import MissingPathError, UserError
from orchestrator.files import atomic_write

# 2: the model's ``head_relu`` is stored. A format-1 checkpoint predates it and was trained with the ReLU in front of
# the head (segmentation_models_pytorch's U-Net), so it is read as ``head_relu=True``: same state-dict keys, and a
# model rebuilt without the ReLU would load silently and predict differently.
# 3: RNG states as tensors and lists (no numpy objects), so that every checkpoint loads with weights_only=True.
FORMAT = 3

# The numpy types a format-1/2 last.pt holds (numpy's legacy RNG state): an array of uint32 rebuilt by numpy's own
# reconstructor. Allowing these names lets weights_only read it; no other global is ever allowed.
_LEGACY_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
try:  # numpy >= 2 moved the reconstructor; both names are the same function
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
_LEGACY_GLOBALS.append(_reconstruct)


class CheckpointError(UserError, ValueError):
    """A checkpoint file that is missing its parts, damaged, or holds objects orch does not load."""


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors, lists and numbers (what ``weights_only`` loading admits)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": [int(version), list(internal), gauss_next],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    if isinstance(npy, dict):
        np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["cached_gaussian"]))
    else:  # format 1/2: numpy's own tuple
        np.random.set_state(npy)
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(path: Path, **content: Any) -> None:
    """``torch.save`` to ``path`` atomically; ``content`` holds the keys of the module docstring."""
    content = {"format": FORMAT, **content}
    atomic_write(path, lambda tmp: torch.save(content, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of ``path``, read without unpickling any object (see the module docstring) and upgraded
    to today's format. Raises FileNotFoundError, or CheckpointError naming the file and what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise MissingPathError(f"checkpoint {p} does not exist; pass a last.pt or best.pt from a run directory")
    try:
        with torch.serialization.safe_globals(_LEGACY_GLOBALS):
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a global: name it, never load it
        raise CheckpointError(f"checkpoint {p} holds objects orch does not load ({_foreign_globals(p)}): orch "
                              "reads only tensors and plain values from a checkpoint and never runs code from one. "
                              "The file is tampered or was not written by orch; use a best.pt or last.pt that "
                              "`orch train` wrote") from None
    except Exception as e:  # a truncated or foreign file: say which and what to do
        raise CheckpointError(f"checkpoint {p} cannot be read ({e}); it is damaged or not an orch checkpoint") from e
    problem = _shape_problem(ckpt)
    if problem:
        raise CheckpointError(f"checkpoint {p} is not an orch checkpoint ({problem}); use a run's best.pt")
    return upgrade_checkpoint(ckpt)


def _foreign_globals(p: Path) -> str:
    """The names of the globals in ``p`` that weights_only refuses (read from the pickle's opcodes; nothing runs)."""
    try:
        names = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(p)
                 if g not in {f"{t.__module__}.{t.__qualname__}" for t in _LEGACY_GLOBALS}]
    except Exception:  # noqa: BLE001 - the message is only richer with the names
        return "objects other than tensors"
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "") if names else "objects other than tensors"


def _shape_problem(ckpt: Any) -> str | None:
    """What makes ``ckpt`` not an orch checkpoint (None if it is one)."""
    if not isinstance(ckpt, dict):
        return f"a {type(ckpt).__name__}, not a dict"
    for key in ("model_config", "model"):
        if not isinstance(ckpt.get(key), dict):
            return f"no {key} dict"
    if not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        return "model holds values that are not tensors"
    if not isinstance(ckpt.get("train_config", {}), dict):
        return "train_config is not a dict"
    return None


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
