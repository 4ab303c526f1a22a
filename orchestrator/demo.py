"""``orch demo``: the whole product on a laptop in minutes.

synthetic LGG-layout data (or ``--real PATH``) -> ``orch prep`` -> the ``paper`` grid's 45 configurations,
scaled down (small images, a few steps), on a local Ray cluster -> a local MLflow store -> the results tables.
Every stage is the real one; only the sizes shrink. Rerunning reuses what is already there (prepared shards are
reused, a finished sweep is restored, not retrained).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator import workdir as wd
from orchestrator.config import SweepConfig, TrackingConfig, _DictMixin

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoConfig(_DictMixin):
    """How far the demo scales the paper study down (every knob is a real TrainConfig field)."""

    workdir: str = "orch-demo"
    real: str | None = None  # an LGG kaggle_3m tree to use instead of synthetic data
    patients: int = 10  # synthetic patients
    seed: int = 0
    grid: str = "paper"
    name: str = "demo"
    epochs: int = 1
    max_steps: int = 2  # optimizer steps per epoch
    batch_size: int = 4
    image_size: int = 64
    max_eval_slices: int = 48
    workers: int = 2  # prep worker processes

    def overrides(self) -> dict:
        return {"epochs": self.epochs, "max_steps": self.max_steps, "batch_size": self.batch_size,
                "image_size": self.image_size, "max_eval_slices": self.max_eval_slices}


def prepare_demo_data(cfg: DemoConfig, progress: ProgressFn | None = None) -> Path:
    """Synthetic (or real) source -> ``<workdir>/prepared``, recorded in ``<workdir>/orch.toml``."""
    from data_prep.prep import prepare
    from data_prep.synth import make_synthetic

    root = Path(cfg.workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if cfg.real:
        source = Path(cfg.real)
    else:
        source = root / "synthetic" / "kaggle_3m"
        if not (source / "data.csv").exists():  # synth is deterministic: an existing tree is the same tree
            log.info("writing %d synthetic patients to %s", cfg.patients, source.parent)
            source = make_synthetic(root / "synthetic", patients=cfg.patients, seed=cfg.seed)
    prepared = root / "prepared"
    prepare(source, prepared, progress=progress, workers=cfg.workers)
    wd.record_prepared(prepared, root)
    return prepared


def run_demo(cfg: DemoConfig, console=None, progress: ProgressFn | None = None):
    """Prepare the data and run the scaled-down sweep; returns the sweep's ``SweepOutcome``."""
    from orchestrator.sweep import run_sweep

    prepared = prepare_demo_data(cfg, progress)
    root = Path(cfg.workdir).resolve()
    sweep = SweepConfig(name=cfg.name, grid=cfg.grid, data=str(prepared), storage=str(root / "sweeps"),
                        overrides=cfg.overrides())
    # Ray workers inherit the environment: keep a laptop demo from starting usage reporting.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return run_sweep(sweep, tracking=TrackingConfig(), console=console, workdir=root)
