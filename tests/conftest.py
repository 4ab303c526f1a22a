"""Fixtures shared by every test area."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real 12-patient LGG sample lives beside the checkout (never inside it): ../shared/lgg-sample/kaggle_3m
SAMPLE = (REPO.parent / "shared" / "lgg-sample" / "kaggle_3m").resolve()


@pytest.fixture(scope="session")
def lgg_sample() -> Path:
    """Path of the real LGG sample; the test is skipped where ../shared is absent."""
    if not (SAMPLE / "data.csv").exists():
        pytest.skip(f"real LGG sample not found at {SAMPLE}")
    return SAMPLE


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op torch thread in the test process: on a 2-core machine shared with Ray workers and other test
    processes, torch's default of one thread per core mostly waits for the other thread (a resnet18 step was
    measured ~10x slower). Ray trial processes set their own thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _quiet_ray_env():
    # Keep Ray from phoning home or opening a dashboard in tests; keep MLflow from searching git in tmp dirs.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    yield
