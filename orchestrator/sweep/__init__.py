"""Sweeps on Ray Tune: one trial per grid configuration, packed onto GPUs (or CPUs), resumable from storage.

    from orchestrator.sweep import run_sweep, dry_run
    plans = dry_run(SweepConfig(grid="paper"))          # what would run, with resources; starts nothing
    outcome = run_sweep(SweepConfig(grid="smoke", data="prepared/"))
    print(outcome.summary())

Modules: ``plan`` (resources per trial, no Ray), ``trial`` (the Tune function trainable around
``training.fit``), ``runner`` (Tuner / restore, tracking, results), ``results`` (results.csv rows),
``progress`` (live table), ``storage`` (local paths and URIs).
"""

from __future__ import annotations

from orchestrator.config import SweepConfig
from orchestrator.grids import load_grid
from orchestrator.sweep.plan import (
    DEFAULT_GPU_SHARE,
    TrialPlan,
    detect_local_gpus,
    plan_sweep,
)


def dry_run(cfg: SweepConfig, gpus: int | None = None) -> list[TrialPlan]:
    """The trials ``run_sweep(cfg)`` would schedule, with their resources, without starting Ray.

    ``gpus``: GPUs of the target cluster; default: this machine's for a local run, and a GPU cluster when
    ``cfg.address`` names one (the dry run cannot see it).
    """
    if gpus is None:
        gpus = 1 if cfg.address else detect_local_gpus()
    return plan_sweep(cfg, load_grid(cfg.grid, cfg.overrides), use_gpus=gpus > 0)


def __getattr__(name: str):
    # run_sweep imports Ray: loaded on first use so `orch sweep --dry-run` and `--help` stay fast.
    if name in ("run_sweep", "SweepOutcome"):
        from orchestrator.sweep import runner

        return getattr(runner, name)
    raise AttributeError(name)


__all__ = ["DEFAULT_GPU_SHARE", "SweepOutcome", "TrialPlan", "dry_run", "plan_sweep", "run_sweep"]
