"""What each trial of a sweep gets: its configuration, GPU share, CPUs and how its loop is launched.

No Ray here: ``plan_sweep`` is pure, so ``orch sweep --dry-run`` prints exactly what a real sweep schedules.

GPU share per encoder depth (``DEFAULT_GPU_SHARE``) is data: ``orchestrator/grids/gpu_share.csv``, one row per
registry encoder with its share and a ``source`` column saying where the value comes from. Today's values follow
eager-step measurements (docs/design.md: ResNet18/34 eager steps are launch-bound and 4 eager trials gave 1.57x
aggregate; ResNet50/101 keep a GPU half busy; ResNet152 saturates it); with captured steps (CUDA graphs) packing
is not measured yet, and ``benchmarks/gpu_packing.py`` measures 1, 2 and 4 trials per GPU to set them. Memory never
limits packing on a 40-80 GiB GPU (a bf16 step peaks at 1.8-5.9 GiB, batch 32).

Trial order (``plan_sweep``): deepest encoder first, the longest-processing-time-first rule: the long ResNet152
trials start while the GPU is otherwise idle, and the short ResNet18 trials fill the gaps at the end, so the
sweep never waits on one late ResNet152 with the GPU three-quarters empty.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import list_encoders
from orchestrator.config import ConfigError, SweepConfig, TrainConfig
from orchestrator.grids import GRID_DIR, GridEntry, expand

GPU_SHARE_FILE = GRID_DIR / "gpu_share.csv"


def load_gpu_share(path: Path = GPU_SHARE_FILE) -> dict[str, float]:
    """The default GPU share per encoder from ``path`` (columns encoder, gpu_share, source); a ConfigError naming
    the file and the row for a share outside (0, 1]."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    shares = {}
    for r in rows:
        try:
            share = float(r["gpu_share"])
        except (KeyError, TypeError, ValueError):
            share = math.nan
        if not 0 < share <= 1:
            raise ConfigError(f"{path}: gpu_share {r.get('gpu_share')!r} of encoder {r.get('encoder')!r} must be a "
                              "number in (0, 1]; fix the row (one trial's share of one GPU)")
        shares[r["encoder"]] = share
    return shares


# Keyed by the registry's encoders (models.list_encoders(); a test holds the keys and the registry together).
DEFAULT_GPU_SHARE = load_gpu_share()
# Tune-function share of a CPU when the loop runs in Ray Train workers: the function only waits on the trainer,
# and a whole CPU per waiting function starves the worker groups on small machines (docs/design.md).
WAITER_CPUS = 0.01
LAUNCHERS = ("auto", "inprocess", "train")


@dataclass(frozen=True)
class TrialPlan:
    """One trial: ``workers == 0`` runs the loop in-process in the Tune function with ``gpus``/``cpus``;
    ``workers >= 1`` runs it in a Ray Train ``TorchTrainer`` of that many workers, each with ``gpus_per_worker``
    GPUs and ``cpus`` CPUs, while the Tune function holds only ``WAITER_CPUS``."""

    trial_id: str
    config: TrainConfig
    gpus: float  # GPUs of the whole trial (all workers together)
    cpus: float  # CPUs per worker (in-process: of the trial)
    workers: int
    checkpoint_every: int = 1  # report a checkpoint to the sweep's storage every N epochs (and at the end)

    @property
    def launcher(self) -> str:
        return "train" if self.workers else "inprocess"

    @property
    def gpus_per_worker(self) -> float:
        return self.gpus / self.workers if self.workers else self.gpus

    def tune_resources(self) -> dict[str, float]:
        """The resources Tune reserves for the trial function itself."""
        if self.workers:
            return {"CPU": WAITER_CPUS}
        res = {"CPU": self.cpus}
        if self.gpus:
            res["GPU"] = self.gpus
        return res

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "config": self.config.to_dict(),
                "resources": {"gpus": self.gpus, "cpus": self.cpus, "workers": self.workers,
                              "launcher": self.launcher}, "checkpoint_every": self.checkpoint_every}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialPlan":
        r = d["resources"]
        return cls(trial_id=d["trial_id"], config=TrainConfig.from_dict(d["config"]), gpus=float(r["gpus"]),
                   cpus=float(r["cpus"]), workers=int(r["workers"]),
                   checkpoint_every=int(d.get("checkpoint_every", 1)))  # plans recorded before the option: 1


def gpu_share(encoder: str) -> float:
    """Default GPU share of one trial of this encoder (1.0 for depths the table does not know)."""
    return DEFAULT_GPU_SHARE.get(encoder, 1.0)


def plan_sweep(cfg: SweepConfig, entries: list[GridEntry], use_gpus: bool) -> list[TrialPlan]:
    """Resources for every grid entry, longest trials first (deepest encoders first, the module doc's order: the
    small ones fill the gaps at the end of the sweep instead of a ResNet152 starting last).

    ``use_gpus=False`` (no GPU in the cluster) runs every trial on ``cfg.cpus_per_trial`` CPUs. With
    ``cfg.folds = K`` every entry is K trials, one per cross-validation fold (``grids.with_folds``), and with
    ``cfg.seeds = N`` every trial N, one per seed (``grids.with_seeds``), each planned and packed like any other
    trial.
    """
    if cfg.launcher not in LAUNCHERS:
        raise ConfigError(f"launcher={cfg.launcher!r} is not valid; choose one of: {', '.join(LAUNCHERS)}")
    g = cfg.gpus_per_trial
    if g is not None and (g < 0 or (g > 1 and not float(g).is_integer())):
        raise ConfigError(f"--gpus-per-trial {g} must be a fraction in (0, 1] (trials share a GPU) or a whole "
                          "number of GPUs (DDP across them), or 0 for CPU-only")
    if cfg.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial {cfg.cpus_per_trial} must be > 0")
    entries = expand(entries, cfg.folds, cfg.seeds)
    plans = []
    for e in entries:
        gpus = 0.0 if not use_gpus else (float(g) if g is not None else gpu_share(e.config.encoder))
        multi = gpus > 1
        if cfg.launcher == "inprocess" and multi:
            raise ConfigError(f"--launcher inprocess cannot train {e.trial_id} on {gpus:g} GPUs: DDP across "
                              "GPUs runs in Ray Train workers; use --launcher auto")
        if cfg.launcher == "train" or multi:
            workers = int(gpus) if multi else 1
        else:
            workers = 0
        plans.append(TrialPlan(e.trial_id, e.config, gpus=gpus, cpus=float(cfg.cpus_per_trial), workers=workers,
                               checkpoint_every=cfg.checkpoint_every))
    order = list_encoders()
    depth = {name: i for i, name in enumerate(order)}
    return sorted(plans, key=lambda p: -depth.get(p.config.encoder, len(order)))


def trial_process_reuse(plans: list[TrialPlan], scheduler: str = "fifo") -> bool:
    """Tune's ``reuse_actors``: True when every trial runs in-process on CPUs only and no scheduler stops trials
    (``scheduler`` "fifo"). A 45-trial CPU sweep then skips a process start per trial (Python, torch, MLflow: ~9 s
    each on 2 cores, BENCHMARKS.md "Demo"); the trial trims its heap when it ends (``release_memory``). GPU trials
    and Ray Train trials get a fresh process, and so does every trial of a screened sweep: reusing the process of a
    trial ASHA stopped fails at times ("Could not re-use actor ... reset_config()"), and the sweep then waited
    10 minutes for a trial Tune never started (measured on the 2-core CI box under load, Ray 2.60)."""
    return scheduler == "fifo" and all(not p.gpus and not p.workers for p in plans)


def default_max_concurrent(plans: list[TrialPlan], cluster: dict[str, float]) -> int:
    """How many trials may run at once on a cluster with these total resources.

    In-process trials are bounded by their own reservations, so the bound only has to be generous; trials
    that launch Ray Train workers reserve almost nothing themselves, so without this bound Tune would start
    every one of them and their worker groups would wait forever for each other's CPUs/GPUs.
    """
    if not plans:
        return 1
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)

    def fits(p: TrialPlan) -> int:
        n_workers = max(p.workers, 1)
        # A Ray Train trial holds its Tune function's WAITER_CPUS on top of its workers' CPUs.
        per_trial_cpus = p.cpus * n_workers + (WAITER_CPUS if p.workers else 0.0)
        by_cpu = math.floor(cpus / per_trial_cpus) if p.cpus else len(plans)
        by_gpu = math.floor(gpus / p.gpus) if p.gpus else len(plans)
        return max(1, min(by_cpu, by_gpu))

    # The smallest trials set the ceiling; larger ones are additionally held back by their reservations.
    return min(len(plans), max(fits(p) for p in plans)) if not any(p.workers for p in plans) \
        else min(len(plans), min(fits(p) for p in plans))


def detect_local_gpus() -> int:
    """GPUs visible on this machine (0 without CUDA); used by dry runs, which start no Ray."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
