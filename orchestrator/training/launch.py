"""What ``orch train`` settles before it trains: the configuration (orch's recipe, or the paper's settings with
``--paper``; options given explicitly win), the run directory, and whether that directory may take this run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import ConfigError, TrainConfig
from orchestrator.recipe import PAPER_SETTINGS


@dataclass(frozen=True)
class TrainPlan:
    """One ``orch train``: its configuration, prepared data, run directory and the key of its MLflow records."""

    cfg: TrainConfig
    data_dir: Path
    run_dir: Path
    key: str


def train_config(given: dict[str, Any], paper: bool = False) -> TrainConfig:
    """``TrainConfig`` of the options ``given`` (None values dropped: the field keeps its default), starting from
    ``PAPER_SETTINGS`` when ``paper``."""
    given = {k: v for k, v in given.items() if v is not None}
    return TrainConfig(**({**PAPER_SETTINGS, **given} if paper else given))


def default_run_dir(cfg: TrainConfig) -> Path:
    """``runs/<encoder>-<optimizer>-lr<lr>[-cv<K>]``."""
    return Path("runs") / (cfg.short_name + (f"-cv{cfg.folds}" if cfg.folds else ""))


def check_run_dir(cfg: TrainConfig, data_dir: Path, run_dir: Path, force: bool) -> str:
    """Refuse (ConfigError) a run directory that holds another configuration's run, unless ``force``; the key of
    this run's MLflow records (its identity's digest: a forced rerun is a new record)."""
    from orchestrator.training import runs
    from orchestrator.training.data import open_data

    data = open_data(data_dir)
    folds = [cfg.replace(fold=k) for k in range(1, cfg.folds + 1)] if cfg.folds else [cfg]
    wanted = [runs.identity(c, open_data(data, c)) for c in folds]
    if not force:
        for c, w in zip(folds, wanted):
            problem = runs.check(run_dir / f"fold{c.fold}" if cfg.folds else run_dir, w)
            if problem:
                raise ConfigError(problem)
    return runs.digest({"runs": wanted})


def plan_train(options: dict[str, Any], paper: bool, data_dir: Path, out: str | Path | None,
               force: bool = False) -> TrainPlan:
    """The configuration of ``options``, its run directory (``out`` or the default), checked before anything
    (MLflow included) hears of the run."""
    cfg = train_config(options, paper)
    run_dir = Path(out) if out else default_run_dir(cfg)
    return TrainPlan(cfg, Path(data_dir), run_dir, check_run_dir(cfg, Path(data_dir), run_dir, force))
