"""``orch demo``: the whole product on a laptop in minutes.

synthetic LGG-layout data (or ``--real PATH``) -> ``orch prep`` -> the ``paper`` grid's 45 configurations,
scaled down (small images, a few steps), on a local Ray cluster -> a local MLflow store -> the results tables.
Every stage is the real one; only the sizes shrink. Rerunning reuses what is already there (prepared shards are
reused, a finished sweep is restored, not retrained).

Disk: the sweep keeps best.pt of the top 3 trials only (``--keep-checkpoints 3`` of ``orch sweep``) and MLflow
refers to those files instead of copying them (``TrackingConfig.log_checkpoints="reference"``): the demo writes
under 1 GB (at most 3 x 269 MB of ResNet152 weights plus ~0.15 GB of data, plots and MLflow records) instead of
~13 GB (44 fp32 checkpoints stored twice, plus 3 pickled models). ``where_things_are`` says where everything went.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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
    # Scaled so that 36 Adam steps at 1e-3 find the synthetic tumours at every depth (30 left ResNet18/34 at the
    # edge: test Dice 0.50/0.49) and the 45 trials fit 10 minutes on 2 cores
    # (BENCHMARKS.md, "Demo"). The paper's BCE would keep so short a run at the predict-nothing baseline
    # (BENCHMARKS.md, "Recipe"): the demo overrides the loss, the sampling and the head (no ReLU in front of it:
    # "The head trap") with the recipe's; optimizer, lr and the constant schedule stay the paper's, so the grid
    # still tells which of them learn.
    epochs: int = 2
    max_steps: int = 18  # optimizer steps per epoch
    batch_size: int = 8
    image_size: int = 32
    max_eval_slices: int = 48
    loss: str = "bce_dice"
    sampling: str = "tumour"
    head_relu: bool = False
    holdout_frac: float = 0.2  # validation and test share each: 2 of 10 synthetic patients
    workers: int = 2  # prep worker processes
    # best.pt of the top k trials only (the ones MLflow lists as models); the other 42 of the paper grid would
    # be up to 6 GB of weights that nobody loads after a demo.
    keep_checkpoints: int = TrackingConfig.log_models_top_k

    def overrides(self) -> dict:
        return {"epochs": self.epochs, "max_steps": self.max_steps, "batch_size": self.batch_size,
                "image_size": self.image_size, "max_eval_slices": self.max_eval_slices, "loss": self.loss,
                "sampling": self.sampling, "head_relu": self.head_relu}


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
    prepare(source, prepared, progress=progress, workers=cfg.workers, val_frac=cfg.holdout_frac,
            test_frac=cfg.holdout_frac)
    wd.record_prepared(prepared, root)
    return prepared


@dataclass
class DemoOutcome:
    """What ``orch demo`` did: the sweep (a ``SweepOutcome``), the paper-layout tables it wrote (Markdown), and the
    closing lines saying where everything went (``where_things_are``)."""

    sweep: Any
    markdown: str
    where: list[str]


def run_demo(cfg: DemoConfig, console=None, progress: ProgressFn | None = None,
             prepared: Path | None = None) -> DemoOutcome:
    """Prepare the data (unless ``prepared`` is given: ``prepare_demo_data``'s result) and run the scaled-down
    sweep, which writes its report (tables and plots) once.

    The CLI prepares first and passes ``prepared``: its prep progress display must end before the sweep's live
    table starts (a progress display left open over the sweep redraws itself, and prints its final state, after
    the sweep)."""
    from orchestrator.sweep import run_sweep

    prepared = prepared or prepare_demo_data(cfg, progress)
    root = Path(cfg.workdir).resolve()
    sweep = SweepConfig(name=cfg.name, grid=cfg.grid, data=str(prepared), storage=str(root / "sweeps"),
                        overrides=cfg.overrides(), keep_checkpoints=cfg.keep_checkpoints)
    # Ray workers inherit the environment: keep a laptop demo from starting usage reporting.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    outcome = run_sweep(sweep, tracking=TrackingConfig(), console=console, workdir=root)
    return DemoOutcome(sweep=outcome, markdown=outcome.report["markdown"].read_text(encoding="utf-8"),
                       where=where_things_are(cfg, outcome, outcome.report))


def disk_usage(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path``, each hard-linked file once (a walk: what is on disk, as ``du`` counts it
    but in apparent bytes)."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:  # removed meanwhile
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def where_things_are(cfg: DemoConfig, outcome, report_paths: dict[str, Path] | None = None) -> list[str]:
    """The lines ``orch demo`` ends with: where the sweep, its results, report, kept checkpoints and MLflow store
    are, how to open them, and the bytes the work directory holds."""
    root = Path(cfg.workdir).resolve()

    def show(p) -> str:  # paths as the user named the work directory
        p = Path(p)
        try:
            return str(Path(cfg.workdir) / p.resolve().relative_to(root))
        except ValueError:
            return str(p)

    sizes = {name: disk_usage(root / name) for name in ("synthetic", "prepared", "sweeps", "mlartifacts")}
    sizes["mlflow.db"] = (root / "mlflow.db").stat().st_size if (root / "mlflow.db").is_file() else 0
    total = disk_usage(root)
    results = outcome.results
    done = int(results["status"].isin(("finished", "diverged")).sum()) if len(results) else 0
    kept = outcome.checkpoints
    lines = [f"Where things are ({cfg.workdir}: {_size(total)} on disk):",
             f"  sweep        {show(outcome.sweep_dir)}  (Tune state; per trial: learning curve, overlay, "
             f"per-patient Dice, result.json)",
             f"  results      {show(outcome.results_csv)}"]
    files = sorted({Path(p) for p in (report_paths or {}).values()})
    tables, plots = [p for p in files if p.suffix != ".png"], [p for p in files if p.suffix == ".png"]
    if tables:
        lines.append(f"  tables       {', '.join(show(p) for p in tables)}")
    if plots:
        lines.append(f"  plots        {len(plots)} PNGs: " + ", ".join(sorted({show(p.parent) for p in plots})) +
                     "/plot_*.png")
    lines.append(f"  checkpoints  {len(kept)} kept (best.pt of the top {cfg.keep_checkpoints} by test "
                 f"dice_volume_mean; none for the other {max(done - len(kept), 0)} trials):")
    width = max((len(t) for t in kept), default=0)
    lines += [f"                 {t:<{width}}  {show(loc)}" for t, loc in kept.items()]
    lines += [f"  MLflow       {show(root / 'mlflow.db')} (artefacts: {show(root / 'mlartifacts')}); it refers to the "
              "kept checkpoints, it holds no copy",
              f"               review every run:  orch ui --workdir {cfg.workdir}",
              f"  disk         {_size(total)}: synthetic data {_size(sizes['synthetic'])}, prepared "
              f"{_size(sizes['prepared'])}, sweep {_size(sizes['sweeps'])}, MLflow "
              f"{_size(sizes['mlflow.db'] + sizes['mlartifacts'])}"]
    if kept:
        from orchestrator.tracking.models import CHAMPION, registered_model_name

        best = next(iter(kept.values()))
        lines.append(f"  predict      orch predict {show(Path(best).parent)} INPUT OUT")
        lines.append(f"               orch predict models:/{registered_model_name(cfg.name)}@{CHAMPION} INPUT OUT "
                     f"--tracking-uri sqlite:///{root / 'mlflow.db'}")
    return lines
