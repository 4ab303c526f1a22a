"""Data preparation for the LGG brain-MRI dataset: TIFF slices + data.csv -> validated, sharded HDF5.

Public surface::

    from data_prep import PreparedData, prepare, make_synthetic, PrepError
    make_synthetic("synth/", patients=6, seed=0)       # an LGG-layout tree: synth/kaggle_3m/...
    manifest = prepare("synth/", "prepared/")          # validate, split, write shards + manifest
    arr = PreparedData("prepared/").load("train")      # SliceArrays: image, mask, patient, slice

This package never imports ``orchestrator``, ray or mlflow (it runs on GPU machines that lack them). The names
above load on first use: ``import data_prep.errors`` (what the CLI needs to catch a user error) does not load
pandas, h5py or tifffile.
"""

from __future__ import annotations

import importlib

_HOMES = {"PrepError": "data_prep.errors", "Problem": "data_prep.errors", "ValidationFailed": "data_prep.errors",
          "PrepOptions": "data_prep.prep", "prepare": "data_prep.prep", "PreparedData": "data_prep.reader",
          "SliceArrays": "data_prep.reader", "verify": "data_prep.reader", "make_synthetic": "data_prep.synth"}

__all__ = ["PrepError", "Problem", "ValidationFailed", "PrepOptions", "prepare", "PreparedData", "SliceArrays",
           "verify", "make_synthetic"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'data_prep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
