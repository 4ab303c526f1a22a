"""Fixtures and helpers shared by every test area (the sweep and tracking tests both train on ``prepared``, with
``TINY`` settings and grids written by ``write_grid``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real 12-patient LGG sample lives beside the checkout (never inside it): ../shared/lgg-sample/kaggle_3m
SAMPLE = (REPO.parent / "shared" / "lgg-sample" / "kaggle_3m").resolve()
# Every sweep test trains at this scale: 64x64 images, 1 step per epoch, a few evaluation slices.
TINY = {"image_size": 64, "max_steps": 1, "batch_size": 4, "max_eval_slices": 16}


def write_grid(path: Path, rows: list[dict]) -> Path:
    """A grid CSV with the union of the rows' columns (empty cells keep defaults)."""
    cols = sorted({k for r in rows for k in r}, key=lambda c: (c != "encoder", c))
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def lgg_sample() -> Path:
    """Path of the real LGG sample; the test is skipped where ../shared is absent."""
    if not (SAMPLE / "data.csv").exists():
        pytest.skip(f"real LGG sample not found at {SAMPLE}")
    return SAMPLE


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A prepared directory of 5 short synthetic patients (3 train, 1 val, 1 test)."""
    from data_prep import make_synthetic, prepare

    root = tmp_path_factory.mktemp("sweep-data")
    make_synthetic(root / "src", patients=5, seed=3, min_slices=20, max_slices=22)
    prepare(root / "src", root / "prepared", workers=1)
    return root / "prepared"


@pytest.fixture(scope="session")
def prepared_tested(tmp_path_factory) -> Path:
    """A prepared directory of 8 short synthetic patients, 4 of them test patients (3 train, 1 val): enough
    patients for the per-patient statistics to pair configurations (``prepared`` tests one)."""
    from data_prep import make_synthetic, prepare

    root = tmp_path_factory.mktemp("sweep-data-tested")
    make_synthetic(root / "src", patients=8, seed=5, min_slices=20, max_slices=22)
    prepare(root / "src", root / "prepared", workers=1, val_frac=0.125, test_frac=0.5)
    return root / "prepared"


@pytest.fixture
def scratch_runs(tmp_path, monkeypatch) -> Path:
    """Trial run directories in this test's tmp dir (inherited by the local Ray a sweep starts)."""
    monkeypatch.setenv("ORCH_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


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
