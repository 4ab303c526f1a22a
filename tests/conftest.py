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


@pytest.fixture(autouse=True, scope="session")
def _quiet_ray_env():
    # Keep Ray from phoning home or opening a dashboard in tests; keep MLflow from searching git in tmp dirs.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    yield
