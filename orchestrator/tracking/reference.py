"""Checkpoints by reference: one copy of a trial's weights (the sweep storage's ``best.pt``), which MLflow points at
instead of storing the same bytes again.

``CheckpointModel`` is the MLflow model of a top-k trial in that mode: a pyfunc holding no weights (about 1 KB of
MLmodel, requirements and a pickled class reference) whose ``model_config["checkpoint"]`` names the checkpoint::

    m = mlflow.pyfunc.load_model("models:/<model id>")     # loads the referenced best.pt
    logits = m.predict(batch)                              # float32 (N, 3, S, S) -> (N, 1, S, S)
    network = m.unwrap_python_model().network              # the torch module itself

The reference is a local path (storage on a local or shared disk) or a URI (``s3://...``, fetched once into a
local cache). Moving or deleting the sweep directory breaks it: that is the price of the single copy (use
``TrackingConfig(log_checkpoints="copy")`` for self-contained models).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from orchestrator.errors import MissingPathError
from orchestrator.files import atomic_write

CACHE_ENV = "ORCH_CHECKPOINT_CACHE"  # where checkpoints referenced by URI are fetched (default: the temp dir)


def fetch_checkpoint(location: str) -> Path:
    """A local file for a checkpoint location: a path as it is; a URI (``s3://``, ``gs://``) downloaded once into
    the cache (atomically: a partial download is never used). Raises FileNotFoundError naming the location."""
    if "://" not in location:
        path = Path(location)
        if not path.is_file():
            raise MissingPathError(f"checkpoint {location} does not exist (pruned by --keep-checkpoints, or the "
                                    "sweep directory moved or was deleted)")
        return path
    import pyarrow.fs as pafs

    root = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "orch-checkpoints")
    dest = root / hashlib.sha1(location.encode()).hexdigest()[:16] / Path(location).name
    if not dest.is_file():
        fs, path = pafs.FileSystem.from_uri(location)
        if fs.get_file_info(path).type != pafs.FileType.File:
            raise MissingPathError(f"checkpoint {location} does not exist (pruned by --keep-checkpoints, or the "
                                    "sweep storage moved or was deleted)")
        atomic_write(dest, lambda tmp: _download(fs, path, tmp))
    return dest


def _download(fs, path: str, dest: Path) -> None:
    """Copy the file ``path`` of the pyarrow filesystem ``fs`` to ``dest``, 16 MB at a time."""
    with fs.open_input_stream(path) as src, open(dest, "wb") as out:
        while chunk := src.read(1 << 24):
            out.write(chunk)


def load_reference(location: str):
    """``(network in eval mode on the CPU, image size it was trained at or None)`` from a checkpoint location."""
    from orchestrator.training.checkpoint import load_checkpoint

    network, cfg, _ = load_checkpoint(fetch_checkpoint(location))
    return network, cfg.image_size


class CheckpointModel(mlflow.pyfunc.PythonModel):
    """A weight-free MLflow model: ``model_config["checkpoint"]`` is the orch checkpoint it loads.
    ``predict``: float32 normalised RGB ``(N, 3, S, S)`` -> logits ``(N, 1, S, S)`` (S divisible by 32)."""

    def load_context(self, context) -> None:
        self.network, self.image_size = load_reference(checkpoint_of(context))

    # The np.ndarray hint: a batch tensor, which MLflow validates against the logged signature, not the hint.
    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.network(x).numpy()


def checkpoint_of(context) -> str:
    """The checkpoint a loading model reads: the one it refers to, else its own copy (``artifacts["checkpoint"]``)."""
    config = context.model_config or {}
    return config.get("checkpoint") or context.artifacts["checkpoint"]


def reference_of(flavors: dict[str, Any]) -> str | None:
    """The checkpoint a logged model refers to (its pyfunc ``model_config``), or None for a self-contained one."""
    pyfunc = flavors.get("python_function") or {}
    config = pyfunc.get("config") or pyfunc.get("model_config") or {}
    return config.get("checkpoint") if isinstance(config, dict) else None
