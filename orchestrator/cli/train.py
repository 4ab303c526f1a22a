"""CLI glue for the model and the loop: ``orch train``, ``orch evaluate``, ``orch bench``, ``orch models``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.cli.common import data_option, user_errors
from orchestrator.config import DEVICES, LOSSES, OPTIMIZERS, ConfigError, TrainConfig

console = Console()
# metric -> column label (short: the table must fit 80 columns)
_EPOCH_COLUMNS = {"loss": "loss", "val_loss": "val loss", "dice_volume_mean": "dice vol", "dice_global": "dice all",
                  "miou_2class": "mIoU", "img_per_s": "img/s", "epoch_time_s": "s"}
_ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _metrics_table(title: str, metrics: dict) -> Table:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, _fmt(v))
    return t


@click.command("train")
@data_option
@click.option("--encoder", type=click.Choice(_ENCODERS), default="resnet34", show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--epochs", type=int, default=50, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--loss", type=click.Choice(LOSSES), default="bce", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--max-steps", type=int, default=None, help="Optimizer steps per epoch (demos, CI).")
@click.option("--image-size", type=int, default=None, help="Train/evaluate at this square size (multiple of 32).")
@click.option("--max-eval-slices", type=int, default=None, help="Evaluate on at most this many slices.")
@click.option("--cuda-graph", type=click.Choice(("auto", "on", "off")), default="auto", show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Local ImageNet encoder weights.")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/<encoder>-<optimizer>-lr<lr>). An existing one is resumed.")
@user_errors
def train_cmd(data, encoder, optimizer, lr, epochs, batch_size, loss, seed, device, max_steps, image_size,
              max_eval_slices, cuda_graph, weights, out):
    """Train one configuration; prints a live per-epoch table and the final metrics.

    \b
    Examples:
      orch train --encoder resnet50 --optimizer adam --lr 1e-4 --epochs 50          # the paper's best row
      orch train --encoder resnet18 --image-size 64 --max-steps 5 --epochs 2        # a minute on a CPU
    """
    from orchestrator.training import fit
    from orchestrator.workdir import prepared_dir

    cfg = TrainConfig(encoder=encoder, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, loss=loss,
                      seed=seed, device=device, max_steps=max_steps, image_size=image_size,
                      max_eval_slices=max_eval_slices, cuda_graph=cuda_graph,
                      weights=weights)
    run_dir = Path(out or Path("runs") / cfg.short_name)
    table = Table(title=f"{cfg.short_name} -> {run_dir}")
    table.add_column("epoch", justify="right")
    for label in _EPOCH_COLUMNS.values():
        table.add_column(label, justify="right")
    with Live(table, console=console, refresh_per_second=4):
        result = fit(cfg, prepared_dir(data), run_dir, on_epoch=lambda r: table.add_row(
            f"{r.epoch}{' *' if r.is_best else ''}", *(_fmt(r.metrics.get(c)) for c in _EPOCH_COLUMNS)))
    console.print(f"\nstatus [bold]{result.status}[/], {result.epochs_completed} epochs, best epoch {result.best_epoch}"
                  " (best = highest validation dice_volume_mean, marked *)")
    if result.test:
        console.print(_metrics_table("test (best checkpoint)", result.test))
    console.print(f"artefacts in {run_dir}")


@click.command("evaluate")
@click.argument("pred", type=click.Path(file_okay=False))
@click.argument("truth", type=click.Path(file_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the metrics here.")
@click.option("--per-patient", type=click.Path(dir_okay=False), default=None, help="Write per-patient Dice CSV here.")
@click.option("--predicted-patients-only", is_flag=True,
              help="Score only the patient folders PRED holds (e.g. test-patient predictions vs a whole kaggle_3m).")
@user_errors
def evaluate_cmd(pred, truth, json_out, per_patient, predicted_patients_only):
    """Score predicted masks PRED (LGG layout, ..._<n>_mask.tif) against the truth tree TRUTH.

    \b
    Example:
      orch predict runs/r34/best.pt kaggle_3m/ pred/ --patient TCGA_DU_5853
      orch evaluate pred/ kaggle_3m/ --predicted-patients-only
    """
    from rich.progress import Progress

    from orchestrator.evaluate import EvaluateError, evaluate_dirs
    from orchestrator.training.results import write_csv

    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("scoring slices", total=None)
            ev = evaluate_dirs(pred, truth, progress=lambda i, n: bar.update(task, completed=i, total=n),
                               predicted_patients_only=predicted_patients_only)
    except EvaluateError as e:
        raise click.ClickException(str(e)) from e
    console.print(_metrics_table(f"{ev.slices} slices, {ev.patients} patients", ev.metrics))
    if json_out:
        Path(json_out).write_text(json.dumps({"metrics": ev.metrics, "slices": ev.slices, "patients": ev.patients,
                                              "per_patient": ev.per_patient}, indent=2))
    if per_patient:
        write_csv(Path(per_patient), ev.per_patient)


@click.command("bench")
@click.option("--encoders", default=",".join(_ENCODERS), show_default=True, help="Comma-separated encoders.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--image-size", type=int, default=None, help="Default 256 on a GPU, 64 on a CPU.")
@click.option("--steps", type=int, default=None, help="Timed steps per variant (default 30 GPU, 3 CPU).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@data_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Append JSON lines here.")
@user_errors
def bench_cmd(encoders, batch_size, image_size, steps, device, data, json_out):
    """Images/s per depth: naive fp32 eager step, our loop's step, our step as a CUDA graph; peak memory; and
    the paper grid's projected wall time on this machine.

    \b
    Example (on a GPU machine; on a CPU it runs small sizes and says so):
      orch bench --encoders resnet18,resnet50,resnet152 --json bench.jsonl
    """
    import torch

    from orchestrator.bench import BenchConfig, run_bench, summary

    names = tuple(e.strip() for e in encoders.split(",") if e.strip())
    bad = [e for e in names if e not in _ENCODERS]
    if bad:
        raise ConfigError(f"unknown encoders {bad}; choose from {', '.join(_ENCODERS)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    gpu = device != "cpu" and torch.cuda.is_available()
    cfg = BenchConfig(encoders=names, batch_size=batch_size if gpu else min(batch_size, 4),
                      image_size=image_size or (256 if gpu else 64), steps=steps or (30 if gpu else 3),
                      warmup=8 if gpu else 1, slices=256 if gpu else 16, device=device)
    if data:
        from data_prep import PreparedData

        pd = PreparedData(data)
        n = {s: _split_slices(pd, s) for s in ("train", "val", "test")}
        cfg = BenchConfig(**{**cfg.__dict__, "train_slices": n["train"], "eval_slices": n["val"] + n["test"]})
    if not gpu:
        console.print(f"[yellow]no GPU: CPU run at small sizes (batch {cfg.batch_size}, {cfg.image_size}px, "
                      f"{cfg.steps} steps); these are not GPU figures[/]")
    table = Table(title=f"orch bench: images/s, batch {cfg.batch_size}, {cfg.image_size}px")
    for c in ("encoder", "naive fp32", "strict fp32", "loop", "loop graph", "x naive", "peak GiB", "paper grid h"):
        table.add_column(c, justify="right")

    def add(r: dict) -> None:
        best = max(r.get("loop_graph_img_per_s") or 0, r.get("loop_img_per_s") or 0)
        table.add_row(r["encoder"], _fmt(r.get("naive_img_per_s")), _fmt(r.get("naive_strict_img_per_s")),
                      _fmt(r.get("loop_img_per_s")),
                      _fmt(r.get("loop_graph_img_per_s")), _fmt(best / r["naive_img_per_s"]) if r.get("naive_img_per_s")
                      else "-", _fmt(r.get("loop_graph_peak_gib") or r.get("loop_peak_gib")),
                      _fmt(r.get("paper_hours_ours")))

    with Live(table, console=console, refresh_per_second=2):
        rows = run_bench(cfg, json_out, on_row=add)
    for r in rows:
        click.echo(json.dumps(r))
    s = summary(rows)
    console.print(f"paper grid (45 configurations x 50 epochs, one after another on this device, train "
                  f"{cfg.train_slices} + eval {cfg.eval_slices} slices/epoch): ours {s['paper_hours_ours']:.2f} h, "
                  f"naive {s['paper_hours_naive']:.2f} h" + ("" if len(names) == 5 else " (only the depths run)"))


def _split_slices(pd, split: str) -> int:
    """Slices of a split from the manifest's shard table (a shard's patients all in the split), else by loading."""
    members = set(pd.patients(split))
    shards = pd.manifest.get("shards", [])
    if all(set(s["patients"]) <= members or not set(s["patients"]) & members for s in shards):
        return sum(s["slices"] for s in shards if set(s["patients"]) <= members)
    return len(pd.load(split).slice)


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


COMMANDS = [train_cmd, evaluate_cmd, bench_cmd, models_cmd]
