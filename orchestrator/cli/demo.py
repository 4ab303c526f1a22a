"""``orch demo``: glue to :mod:`orchestrator.demo` (parse, one call, print)."""

from __future__ import annotations

import click

from orchestrator.cli.common import make_console, stage_progress, user_errors
from orchestrator.demo import DemoConfig


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
    Example (a fresh laptop, no GPU, no dataset; 10-25 minutes on 2 cores (BENCHMARKS.md, "Demo"), < 1 GB of disk):
      orch demo
      orch demo --real ~/data/lgg-mri-segmentation/kaggle_3m
    """
    from orchestrator.demo import prepare_demo_data, run_demo

    cfg = DemoConfig(workdir=workdir, real=real, patients=patients, grid=grid, epochs=epochs, max_steps=max_steps,
                     image_size=image_size)
    console = make_console()  # plain lines (prep stages, trial events) where stdout is no terminal
    data = f"real data {real}" if real else f"{patients} SYNTHETIC patients (LGG layout, not MRI)"
    console.rule(f"orch demo: {data} -> grid {grid} scaled down ({image_size}px, {max_steps} steps x {epochs} "
                 f"epoch(s), loss {cfg.loss}, {cfg.sampling} sampling)")
    with stage_progress() as progress:  # closed before the sweep: its bars end above the sweep's table
        prepared = prepare_demo_data(cfg, progress)
    outcome = run_demo(cfg, console=console, prepared=prepared)
    if not real:
        click.echo(f"The data are synthetic ({patients} phantom patients in the LGG layout, bright FLAIR tumours): "
                   "these figures show which configurations learn in a few steps, not how well orch segments "
                   "real MRI (for that: README, 'Results on LGG').\n")
    click.echo(outcome.markdown)
    click.echo(outcome.sweep.summary())
    click.echo("\n" + "\n".join(outcome.where))


COMMANDS = [demo_cmd]
