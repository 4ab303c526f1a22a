"""Fixtures for data_prep tests: one small synthetic LGG tree per session, copied per test that changes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from data_prep.synth import make_synthetic


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory) -> Path:
    """A 4-patient synthetic tree (6-9 slices each); its ``kaggle_3m`` folder. Never modify it in place."""
    out = tmp_path_factory.mktemp("synth")
    return make_synthetic(out, patients=4, seed=3, min_slices=6, max_slices=9)


@pytest.fixture
def src(synth_tree, tmp_path) -> Path:
    """A private copy of the synthetic ``kaggle_3m`` folder that a test may damage."""
    dst = tmp_path / "src" / "kaggle_3m"
    shutil.copytree(synth_tree, dst)
    return dst

# The real sample comes from tests/conftest.py's ``lgg_sample`` fixture (skipped where ../shared is absent).
