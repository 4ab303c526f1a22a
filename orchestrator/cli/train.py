"""CLI glue for the model and the loop: ``orch train``, ``orch bench``, ``orch models``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from models import list_encoders
from orchestrator.cli.common import data_option, interactive, make_console, metrics_table, user_errors
from orchestrator.config import (
    CUDA_GRAPHS,
    DEVICES,
    LOSSES,
    OPTIMIZERS,
    SAMPLINGS,
    SCHEDULES,
    TrainConfig,
)
from orchestrator.fmt import fmt_value

console = Console()
# metric -> column label (short: the table must fit 80 columns)
_EPOCH_COLUMNS = {"loss": "loss", "val_loss": "val loss", "dice_volume_mean": "dice vol", "dice_global": "dice all",
                  "miou_2class": "mIoU", "img_per_s": "img/s", "epoch_time_s": "s"}


_DEFAULT = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _opt(*decls, field: str, **kw):
    """A ``TrainConfig`` field as an option whose default is the dataclass's (None when not given, so the config
    keeps its own default: one place holds every default, orchestrator/config.py)."""
    return click.option(*decls, field, default=None, show_default=str(_DEFAULT[field]), **kw)


@click.command("train")
@data_option
@_opt("--encoder", field="encoder", type=click.Choice(list_encoders()))
@_opt("--optimizer", field="optimizer", type=click.Choice(OPTIMIZERS))
@_opt("--lr", field="lr", type=float)
@_opt("--epochs", field="epochs", type=int)
@_opt("--batch-size", field="batch_size", type=int)
@_opt("--loss", field="loss", type=click.Choice(LOSSES))
@_opt("--weight-decay", field="weight_decay", type=float)
@_opt("--schedule", field="schedule", type=click.Choice(SCHEDULES), help="lr after warm-up.")
@_opt("--warmup-epochs", field="warmup_epochs", type=float, help="Linear lr warm-up.")
@_opt("--sampling", field="sampling", type=click.Choice(SAMPLINGS),
      help="tumour: oversample slices holding tumour (see --tumour-fraction).")
@_opt("--tumour-fraction", field="tumour_fraction", type=float, help="Share of drawn slices with tumour.")
@_opt("--augment/--no-augment", field="augment", help="Flips, rotation, scale.")
@_opt("--intensity-aug/--no-intensity-aug", field="intensity_aug", help="Brightness and gamma jitter.")
@_opt("--tta/--no-tta", field="tta", help="Flip test-time augmentation in evaluation.")
@_opt("--min-component", field="min_component", type=int,
      help="Drop predicted 3D tumour components under this many voxels (at 256 px); 0: off.")
@_opt("--head-relu/--no-head-relu", field="head_relu",
      help="A ReLU between the last decoder conv and the head (smp's U-Net, the paper's model).")
@_opt("--seed", field="seed", type=int)
@_opt("--device", field="device", type=click.Choice(DEVICES))
@_opt("--max-steps", field="max_steps", type=int, help="Optimizer steps per epoch (demos, CI).")
@_opt("--image-size", field="image_size", type=int, help="Train/evaluate at this square size (multiple of 32).")
@_opt("--max-eval-slices", field="max_eval_slices", type=int, help="Evaluate on at most this many slices.")
@_opt("--cuda-graph", field="cuda_graph", type=click.Choice(CUDA_GRAPHS))
@_opt("--weights", field="weights", type=click.Path(dir_okay=False), help="Local ImageNet encoder weights.")
@_opt("--folds", field="folds", type=click.IntRange(min=2),
      help="Patient-level K-fold cross-validation: every patient tested once (folds seeded like the split).")
@click.option("--paper", "paper", is_flag=True,
              help="Start from the paper's settings (BCE, constant lr, uniform sampling, no TTA or post-processing, "
              "smp's U-Net with --head-relu) "
              "instead of orch's recipe; options given explicitly still win.")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/<encoder>-<optimizer>-lr<lr>[-cv<K>]). An existing one is resumed, "
              "or its result returned, only if it holds this configuration (else an error names the differences).")
@click.option("--force", is_flag=True,
              help="If --out holds a run of another configuration, delete its run files (only those orch wrote) and "
              "train afresh.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow store (default sqlite:///<cwd>/mlflow.db): experiment orch-train, one parent run per "
              "run directory, a child per model (each fold).")
@click.option("--no-tracking", is_flag=True, help="Do not record the run in MLflow.")
@user_errors
def train_cmd(data, paper, out, force, tracking_uri, no_tracking, **options):
    """Train one configuration (orch's recipe unless --paper); prints each epoch and the test metrics.

    \b
    Examples:
      orch train --encoder resnet18 --image-size 128 --epochs 20                     # the recipe, CPU-sized
      orch train --paper --encoder resnet50 --optimizer adam --lr 1e-4 --epochs 50  # the paper's best row
      orch train --folds 5 --encoder resnet34                                       # 5-fold cross-validation
      orch train --encoder resnet18 --image-size 64 --max-steps 5 --epochs 2        # a minute on a CPU
    """
    from orchestrator.training.launch import plan_train
    from orchestrator.workdir import prepared_dir

    plan = plan_train(options, paper, prepared_dir(data), out, force)  # before MLflow hears of the run
    console = make_console()
    tracker = None if no_tracking else _tracker(tracking_uri, plan)
    if plan.cfg.folds:
        _train_cv(plan, console, tracker, force)
    else:
        _train_one(plan, console, tracker, force)


def _train_one(plan, console: Console, tracker=None, force: bool = False) -> None:
    from orchestrator.training import fit

    cfg, run_dir = plan.cfg, plan.run_dir
    with _EpochPrinter(console, f"{cfg.short_name} -> {run_dir}") as printer:
        def on_epoch(report) -> None:
            printer.epoch(report)
            if tracker:
                tracker.epoch(None, report)

        result = fit(cfg, plan.data_dir, run_dir, on_epoch=on_epoch, force=force)
    if tracker:
        tracker.done(None, result)
        tracker.finish()
    console.print(f"status [bold]{result.status}[/], {result.epochs_completed} epochs, best epoch {result.best_epoch}"
                  " (best = highest validation dice_volume_mean, marked *)")
    if result.test:
        console.print(metrics_table("test (best checkpoint)", result.test))
    console.print(f"artefacts in {run_dir}")


def _tracker(uri: str | None, plan):
    from orchestrator.tracking import default_tracking_uri
    from orchestrator.tracking.train import TrainTracker

    return TrainTracker(uri or default_tracking_uri(), plan.run_dir, plan.cfg.to_dict(), key=plan.key)


def _train_cv(plan, console: Console, tracker=None, force: bool = False) -> None:
    from orchestrator.training.cv import run_cv

    cfg, run_dir = plan.cfg, plan.run_dir
    printers: dict[int, _EpochPrinter] = {}

    def on_epoch(fold: int, report) -> None:
        if fold not in printers:
            for p in printers.values():
                p.close()
            title = f"fold {fold}/{cfg.folds}: {cfg.short_name} -> {run_dir}/fold{fold}"
            printers[fold] = _EpochPrinter(console, title, prefix=f"fold {fold}/{cfg.folds} ").open()
        printers[fold].epoch(report)
        if tracker:
            tracker.epoch(fold, report)

    def on_fold(fold: int, result) -> None:
        if tracker:
            tracker.done(fold, result)
        n_test = sum(1 for r in result.per_patient if r.get("split") == "test")
        console.print(f"fold {fold}/{cfg.folds}: {result.status}, test dice_volume_mean "
                      f"{fmt_value(result.test.get('dice_volume_mean'))} over {n_test} patients", highlight=False)

    try:
        cv = run_cv(cfg, plan.data_dir, run_dir, on_epoch=on_epoch, on_fold=on_fold, force=force)
    finally:
        for p in printers.values():
            p.close()
    if tracker:
        tracker.finish(cv.summary)
    _print_cv(cfg, run_dir, cv.summary, console)


def _print_cv(cfg: TrainConfig, run_dir: Path, s: dict, console: Console) -> None:
    from orchestrator.training.cv import PER_PATIENT_CSV, PLOT, PUBLISHED

    table = Table(title=f"{cfg.folds}-fold cross-validation, Dice per patient volume ({s['n_patients']} patients)")
    for c in ("", "mean", "median", "95% CI"):
        table.add_column(c, justify="right")
    table.add_row(f"orch ({cfg.short_name.removesuffix('-fold1')})", fmt_value(s["mean"]), fmt_value(s["median"]),
                  f"{fmt_value(s['ci95_low'])}-{fmt_value(s['ci95_high'])}")
    for label, value in PUBLISHED.items():
        table.add_row(label, fmt_value(value), "", "")
    table.add_row("predict nothing", fmt_value(0.0), fmt_value(0.0), "")
    console.print(table)
    if not s.get("complete", True):
        console.print(f"[yellow]incomplete: {len(s['missing_patients'])} patients have no test result "
                      "(a fold did not finish); rerun the command to resume[/]")
    console.print(f"per-patient table {run_dir / PER_PATIENT_CSV}, plot {run_dir / PLOT}")


class _EpochPrinter:
    """One row per epoch: a live table on a terminal, a plain flushed line otherwise (logs, ray job submit)."""

    def __init__(self, console: Console, title: str, prefix: str = ""):
        self.console, self.title, self.prefix = console, title, prefix
        self.live: Live | None = None
        self.table: Table | None = None

    def open(self) -> _EpochPrinter:
        if interactive():
            self.table = Table(title=self.title)
            self.table.add_column("epoch", justify="right")
            for label in _EPOCH_COLUMNS.values():
                self.table.add_column(label, justify="right")
            self.live = Live(self.table, console=self.console, refresh_per_second=4)
            self.live.start()
        else:
            click.echo(self.title)  # click.echo flushes: the line is in the log at once
        return self

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def __enter__(self) -> _EpochPrinter:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def epoch(self, r) -> None:
        cells = [fmt_value(r.metrics.get(c), 0 if c in ("img_per_s", "epoch_time_s") else 4) for c in _EPOCH_COLUMNS]
        if self.table is not None:
            self.table.add_row(f"{r.epoch}{' *' if r.is_best else ''}", *cells)
            return
        pairs = " ".join(f"{label.replace(' ', '_')} {v}" for label, v in zip(_EPOCH_COLUMNS.values(), cells))
        click.echo(f"{self.prefix}epoch {r.epoch} {pairs}{' (best)' if r.is_best else ''}"
                   f"{' DIVERGED' if r.status == 'diverged' else ''}")


@click.command("bench")
@click.option("--encoders", default=",".join(list_encoders()), show_default=True, help="Comma-separated encoders.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--image-size", type=int, default=None, help="Default 256 on a GPU, 64 on a CPU.")
@click.option("--steps", type=int, default=None,
              help="Timed steps per variant (default 30 GPU, 3 CPU; with --grid 100 GPU).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@data_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also append every row as a JSON line to this file (stdout keeps the table).")
@click.option("--grid", default=None, metavar="NAME", help="Instead: project this grid's wall time (e.g. paper) on "
              "this machine from a short trial epoch per depth (train, validation, checkpoint), packed as the sweep "
              "packs it (orchestrator/grids/gpu_share.csv); --encoders limits the depths.")
@user_errors
def bench_cmd(encoders, batch_size, image_size, steps, device, data, json_out, grid):
    """Images/s per depth: naive fp32 eager step, our loop's step, our step as a CUDA graph; peak memory; and
    the paper grid's projected wall time on this machine. With --grid: the grid's bill before `ray up`.

    \b
    Example (on a GPU machine; on a CPU it runs small sizes and says so):
      orch bench --encoders resnet18,resnet50,resnet152 --json bench.jsonl
      orch bench --grid paper
    """
    from orchestrator.bench import bench_config, cpu_note, run_bench

    cfg = bench_config(encoders, batch_size, image_size, steps, device, data, gpu_steps=100 if grid else 30)
    if cpu_note(cfg):
        console.print(f"[yellow]{cpu_note(cfg)}[/]", soft_wrap=True)
    if grid:
        _bench_grid(cfg, grid, json_out)
        return
    table = _bench_table(cfg)
    with _showing(table):
        rows = run_bench(cfg, json_out, on_row=lambda r: _add_bench_row(table, r))
    console.print(_projection_line(cfg, rows), soft_wrap=True)


@contextlib.contextmanager
def _showing(table: Table):
    """Fill ``table`` inside the block: live on a terminal; elsewhere (a pipe, a log) printed once, whole, after."""
    if interactive():
        with Live(table, console=console, refresh_per_second=2):
            yield
        return
    yield
    console.print(table)


_BENCH_COLUMNS = ("encoder", "naive fp32", "strict fp32", "loop", "loop graph", "x naive", "peak GiB", "grid h")
_GRID_COLUMNS = ("encoder", "at once", "img/s each", "img/s all", "val s", "ckpt s", "epoch s", "hours")


def _table(title: str, columns: tuple[str, ...]) -> Table:
    """An empty table whose encoder column never wraps or shrinks (``resnet152`` stays whole at 80 columns)."""
    table = Table(title=title)
    for c in columns:
        if c == "encoder":
            table.add_column(c, no_wrap=True, min_width=9)
        else:
            table.add_column(c, justify="right", overflow="fold")  # figures wrap, never end in "..."
    return table


def _bench_table(cfg) -> Table:
    return _table(f"orch bench: images/s, batch {cfg.batch_size}, {cfg.image_size}px", _BENCH_COLUMNS)


def _cell(v) -> str:
    """A figure as the tables show it: 4 decimals under 10, 1 from 10 up; "-" when missing."""
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return (f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}") if isinstance(v, float) else str(v)


def _add_bench_row(table: Table, r: dict) -> None:
    best = max(r.get("loop_graph_img_per_s") or 0, r.get("loop_img_per_s") or 0)
    speedup = _cell(best / r["naive_img_per_s"]) if r.get("naive_img_per_s") else "-"
    table.add_row(r["encoder"], _cell(r.get("naive_img_per_s")), _cell(r.get("naive_strict_img_per_s")),
                  _cell(r.get("loop_img_per_s")), _cell(r.get("loop_graph_img_per_s")), speedup,
                  _cell(r.get("loop_graph_peak_gib") or r.get("loop_peak_gib")), _cell(r.get("paper_hours_ours")))


def _projection_line(cfg, rows: list[dict]) -> str:
    """The paper grid's projected wall time on this device, summed over the depths run."""
    from orchestrator.bench import summary

    s = summary(rows)
    every_depth = set(cfg.encoders) >= set(list_encoders())
    return (f"paper grid (45 configurations x 50 epochs, one after another on this device, train "
            f"{cfg.train_slices} + eval {cfg.eval_slices} slices/epoch): ours {s['paper_hours_ours']:.2f} h, "
            f"naive {s['paper_hours_naive']:.2f} h" + ("" if every_depth else " (only the depths run)"))


def _bench_grid(cfg, grid: str, json_out: str | None) -> None:
    """``orch bench --grid``: a short packed trial epoch per depth of ``grid``, its table, the projected hours."""
    from orchestrator.bench import grid_depths, run_grid_bench
    from orchestrator.grids import load_grid
    from orchestrator.sweep.plan import DEFAULT_GPU_SHARE

    order = list(reversed(list_encoders()))  # the sweep's default order: deepest first
    depths = [d for d in grid_depths(load_grid(grid), DEFAULT_GPU_SHARE, order) if d.encoder in cfg.encoders]
    table = _table(f"orch bench --grid {grid}: one trial epoch per depth, packed as the sweep packs it", _GRID_COLUMNS)
    with _showing(table):
        rows = run_grid_bench(cfg, depths, on_row=lambda r: _add_grid_row(table, r))
    if json_out:
        with open(json_out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    console.print(_grid_line(cfg, grid, rows), soft_wrap=True)


def _add_grid_row(table: Table, r: dict) -> None:
    keys = ("img_per_s_trial", "img_per_s_total", "val_s", "ckpt_s", "epoch_s", "hours")
    cells = [_cell(r.get(k)) for k in keys] if "error" not in r else ["error"] + ["-"] * (len(keys) - 1)
    table.add_row(r["encoder"], str(r["concurrent"]), *cells)


def _grid_line(cfg, grid: str, rows: list[dict]) -> str:
    """The projection and the assumptions it rests on."""
    trials = sum(r["trials"] for r in rows)
    failed = [r["encoder"] for r in rows if "error" in r]
    hours = sum(r.get("hours", 0.0) for r in rows)
    shares = ", ".join(f"{r['encoder']} {r['share']:g}" for r in rows)
    return (f"grid {grid} ({trials} trials; GPU share {shares}) on this machine: {hours:.2f} h projected"
            + (f" (failed: {', '.join(failed)}; not counted)" if failed else "")
            + f". Assumes per epoch {cfg.train_slices} train slices at the measured rate, validation of "
            f"{cfg.val_slices} slices, a checkpoint to local disk every epoch (storage copies not counted), a test "
            f"pass once per trial; depths one after another, deepest first; batch {cfg.batch_size}, "
            f"{cfg.image_size}px, {cfg.steps} timed steps per trial; start-up and data loading not counted.")


@click.command("models")
def models_cmd():
    """The ResNet-UNet family: encoders, parameter counts, encoder out_channels.

    \b
    Example:
      orch models
    """
    import torch

    from models import ENCODERS, count_parameters, create_model

    table = Table(title="ResNet-UNet encoders (U-Net decoder 256-128-64-32-16, 1 output map)")
    for c in ("encoder", "parameters", "block", "layers", "out_channels"):
        table.add_column(c, justify="right")
    for name, spec in ENCODERS.items():
        with torch.device("meta"):  # count without allocating or initialising weights
            n = count_parameters(create_model(name))
        table.add_row(name, f"{n:,}", spec.block.__name__, str(list(spec.layers)), str(list(spec.out_channels)))
    console.print(table)


COMMANDS = [train_cmd, bench_cmd, models_cmd]
