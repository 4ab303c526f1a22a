"""``orch predict`` (and ``orch demo``): glue to :mod:`orchestrator.predict` and :mod:`orchestrator.demo`."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.common import make_console, stage_progress, user_errors
from orchestrator.demo import DemoConfig


@click.command("predict")
@click.argument("model", metavar="MODEL")
@click.argument("input_dir", metavar="INPUT", type=click.Path(exists=True, file_okay=False))
@click.argument("out", metavar="OUT", type=click.Path(file_okay=False))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True,
              help="Probability above which a pixel is tumour.")
@click.option("--no-overlays", is_flag=True, help="Skip the overlay PNGs.")
@click.option("--patient", "patients", multiple=True, metavar="ID",
              help="Only this patient (e.g. TCGA_DU_5853; repeatable). Default: every patient folder in INPUT.")
@user_errors
def predict_cmd(model: str, input_dir: str, out: str, device: str, batch_size: int, threshold: float,
                no_overlays: bool, patients: tuple[str, ...]) -> None:
    """Predict tumour masks for a patient folder or an LGG tree, with LGG naming (..._<n>_mask.tif).

    \b
    MODEL: a checkpoint (best.pt), a run / sweep-trial directory, or an MLflow model URI (models:/NAME/1).
    Example:
      orch predict runs/resnet34/best.pt kaggle_3m/TCGA_CS_4941_19960909 predictions/
      orch predict runs/resnet34/best.pt kaggle_3m/ pred/ --patient TCGA_DU_5853
      orch evaluate pred/ kaggle_3m/ --predicted-patients-only     # score them against the truth
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from orchestrator.predict import predict_tree

    with Progress(TextColumn("predicting (patients)"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("predict", total=None)
        rows = predict_tree(model, input_dir, out, device=device, batch_size=batch_size, threshold=threshold,
                            overlays=not no_overlays, patients=patients,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
    slices = sum(r["slices"] for r in rows)
    tumour = sum(r["tumour_slices"] for r in rows)
    click.echo(f"predicted {slices} slices of {len(rows)} patients ({tumour} with tumour) into {out}; "
               f"per-patient table: {Path(out) / 'patients.csv'}")


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), default="orch-demo", show_default=True,
              help="Where the demo's data, sweep, MLflow store and reports go (rerunning reuses them).")
@click.option("--real", type=click.Path(exists=True, file_okay=False), default=None,
              help="Use a real LGG kaggle_3m tree instead of synthetic data.")
@click.option("--patients", type=click.IntRange(min=4), default=10, show_default=True,
              help="Synthetic patients to make (ignored with --real).")
@click.option("--grid", default="paper", show_default=True, help="Grid to run scaled down (paper: 45 configurations).")
@click.option("--epochs", type=click.IntRange(min=1), default=DemoConfig.epochs, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=DemoConfig.max_steps, show_default=True,
              help="Optimizer steps per epoch.")
@click.option("--image-size", type=click.IntRange(min=32), default=DemoConfig.image_size, show_default=True,
              help="Train and evaluate at this square size (the data stays 256x256).")
@user_errors
def demo_cmd(workdir: str, real: str | None, patients: int, grid: str, epochs: int, max_steps: int,
             image_size: int) -> None:
    """Run the whole product on this machine: data -> prep -> the paper grid scaled down on Ray -> MLflow.

    \b
    Example (a fresh laptop, no GPU, no dataset; about 5 minutes on 2 cores, < 1 GB of disk):
      orch demo
      orch demo --real ~/data/lgg-mri-segmentation/kaggle_3m
    """
    from orchestrator.demo import run_demo, where_things_are
    from orchestrator.report import make_report

    cfg = DemoConfig(workdir=workdir, real=real, patients=patients, grid=grid, epochs=epochs, max_steps=max_steps,
                     image_size=image_size)
    console = make_console()  # plain lines (prep stages, trial events) where stdout is no terminal
    data = f"real data {real}" if real else f"{patients} SYNTHETIC patients (LGG layout, not MRI)"
    console.rule(f"orch demo: {data} -> grid {grid} scaled down ({image_size}px, {max_steps} steps x {epochs} "
                 f"epoch(s), loss {cfg.loss}, {cfg.sampling} sampling)")
    with stage_progress() as progress:
        outcome = run_demo(cfg, console=console, progress=progress)
    rep = make_report(str(outcome.results_dir), plots=True)
    if not real:
        click.echo(f"The data are synthetic ({patients} phantom patients in the LGG layout, bright FLAIR tumours): "
                   "these figures show which configurations learn in a few steps, not how well orch segments "
                   "real MRI (for that: README, 'Results on LGG').\n")
    click.echo(rep.markdown)
    click.echo(outcome.summary())
    click.echo("\n" + "\n".join(where_things_are(cfg, outcome, rep.paths)))


COMMANDS = [demo_cmd, predict_cmd]
