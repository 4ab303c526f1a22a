"""Training fixtures: tiny prepared data sets made once per session, the tiny
TrainConfig the loop tests start from is ``training_helpers.tiny_cfg``."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep import PrepOptions, make_synthetic, prepare


@pytest.fixture(scope="session")
def synthetic_prepared(tmp_path_factory) -> Path:
    """5 synthetic patients (3 train / 1 val / 1 test), 20-24 slices each, prepared."""
    root = tmp_path_factory.mktemp("training_synth")
    make_synthetic(root / "src", patients=5, seed=3, min_slices=20, max_slices=24)
    prepare(root / "src", root / "prep", PrepOptions(workers=1, val_frac=0.2, test_frac=0.2))
    return root / "prep"


@pytest.fixture(scope="session")
def sample_prepared(lgg_sample, tmp_path_factory) -> Path:
    """The real 12-patient LGG sample, prepared into a temporary folder (skipped where the sample is absent)."""
    out = tmp_path_factory.mktemp("training_sample") / "prep"
    prepare(lgg_sample, out, PrepOptions(workers=1))
    return out
