"""Fixtures of the predict/evaluate tests: one tiny trained run, shared by every file here."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep import PrepOptions, make_synthetic, prepare
from orchestrator.config import TrainConfig
from orchestrator.training import fit


@pytest.fixture(scope="package")
def trained(tmp_path_factory):
    """A tiny resnet18 run at full 256 px (so predict and the run's own test pass see the same pixels).

    Returns ``(root, source, result)``: ``root/run/best.pt`` is the checkpoint, ``source`` the synthetic
    kaggle_3m tree it was trained on (5 patients of 20-22 slices)."""
    root = tmp_path_factory.mktemp("predict")
    source = make_synthetic(root / "src", patients=5, seed=11, min_slices=20, max_slices=22)
    prepare(root / "src", root / "prep", PrepOptions(workers=1, val_frac=0.2, test_frac=0.2))
    # TTA and post-processing on: predict must evaluate the way the run did, or the round trip breaks
    cfg = TrainConfig(encoder="resnet18", epochs=1, batch_size=4, max_steps=2, lr=1e-3, device="cpu", seed=1,
                      eval_batch_size=16, cuda_graph="off", tta=True, min_component=50)
    result = fit(cfg, root / "prep", root / "run")
    return root, Path(source), result
