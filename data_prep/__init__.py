"""Data preparation for the LGG brain-MRI dataset: TIFF slices + data.csv -> validated, sharded HDF5.

Public surface::

    from data_prep import PreparedData, prepare, make_synthetic, PrepError
    make_synthetic("synth/", patients=6, seed=0)       # an LGG-layout tree: synth/kaggle_3m/...
    manifest = prepare("synth/", "prepared/")          # validate, split, write shards + manifest
    arr = PreparedData("prepared/").load("train")      # SliceArrays: image, mask, patient, slice

This package never imports ``orchestrator``, ray or mlflow (it runs on GPU machines that lack them).
"""

from data_prep.errors import PrepError, Problem, ValidationFailed
from data_prep.prep import PrepOptions, prepare
from data_prep.reader import PreparedData, SliceArrays, verify
from data_prep.synth import make_synthetic

__all__ = ["PrepError", "Problem", "ValidationFailed", "PrepOptions", "prepare", "PreparedData", "SliceArrays",
           "verify", "make_synthetic"]
