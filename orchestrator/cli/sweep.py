"""``orch sweep``: glue between the command line and ``orchestrator.sweep`` (parse, build a SweepConfig, call
``run_sweep`` or ``dry_run``, print)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from orchestrator import workdir
from orchestrator.cli.common import data_option, make_console, user_errors
from orchestrator.config import LOSSES, SCHEDULERS, SweepConfig, TrackingConfig
from orchestrator.sweep.plan import LAUNCHERS


def _plan_table(plans, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("#", "trial id", "encoder", "optimizer", "lr", "epochs", "loss", "batch", "GPU", "CPU", "runs in"):
        table.add_column(col, justify="right" if col in ("#", "lr", "epochs", "batch", "GPU", "CPU") else "left",
                         overflow="fold" if col == "trial id" else "ellipsis")  # ids wrap, never cut short
    for i, p in enumerate(plans, 1):
        c = p.config
        where = f"Ray Train x{p.workers}" if p.workers else "in-process"
        table.add_row(str(i), p.trial_id, c.encoder, c.optimizer, f"{c.lr:g}", str(c.epochs), c.loss,
                      str(c.batch_size), f"{p.gpus:g}", f"{p.cpus:g}", where)
    return table


@click.command("sweep")
@click.option("--grid", default="paper", show_default=True,
              help="Grid name (orchestrator/grids/*.csv: paper, recipe, smoke) or the path of a grid CSV.")
@click.option("--name", default=None, help="Sweep (and MLflow experiment) name. Default: the grid's name.")
@click.option("--dry-run", is_flag=True, help="Print the configurations and their resources; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print a JSON list, one object per trial.")
@data_option
@click.option("--storage", default="", help="Where the sweep lives: a path (default ./sweeps) or s3://bucket/path. "
              "Rerunning the same command there resumes the sweep.")
@click.option("--address", default=None, help="Ray cluster to join (`auto` on a cluster node or in `ray job "
              "submit`). Default: start a local Ray for this command.")
@click.option("--gpus-per-trial", type=float, default=None, help="GPU share of each trial (e.g. 0.25: four per "
              "GPU; 2: DDP on 2 GPUs). Default: per encoder depth (resnet18 0.25 ... resnet152 1).")
@click.option("--cpus-per-trial", type=float, default=1.0, show_default=True, help="CPUs per trial (per worker).")
@click.option("--max-concurrent", type=int, default=None, help="At most this many trials at once. Default: as the "
              "cluster's resources allow.")
@click.option("--launcher", type=click.Choice(LAUNCHERS), default="auto", show_default=True,
              help="Where a trial's loop runs: in the Tune trial, or in Ray Train workers (auto: Ray Train only "
              "for --gpus-per-trial > 1).")
@click.option("--resume", is_flag=True, help="Require an existing sweep to resume (rerunning resumes anyway).")
@click.option("--restart-errored", is_flag=True, help="On resume, rerun errored trials from scratch.")
@click.option("--epochs", type=int, default=None, help="Override the grid's epochs.")
@click.option("--batch-size", type=int, default=None, help="Override the grid's batch size.")
@click.option("--loss", type=click.Choice(LOSSES), default=None, help="Override the grid's loss.")
@click.option("--max-steps", type=int, default=None, help="Override: optimizer steps per epoch (CPU demos).")
@click.option("--image-size", type=int, default=None, help="Override: train/evaluate at this square size.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow tracking URI (a cluster: http://<head>:5000, exported by clusters/*.yaml). "
              "Default: sqlite:///<cwd>/mlflow.db.")
@click.option("--no-tracking", is_flag=True, help="Do not record the sweep in MLflow.")
@click.option("--folds", type=click.IntRange(min=2), default=None, metavar="K",
              help="K-fold cross-validation over patients: every configuration becomes K trials "
              "(<id>-fold<k>), gathered into cv/<id>/ and cv_results.csv, every patient tested once. "
              "Default: the prepared train/val/test split.")
@click.option("--seeds", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train every configuration (every fold) N times, with seeds 0..N-1 (<id>-seed<s>, results.csv's "
              "seed column), so the report's statistics can tell configurations from seeds. Default: once, with the "
              "configuration's seed.")
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=None, metavar="K",
              help="After the sweep, delete best.pt of the trials outside the top K by test dice_volume_mean "
              "(metrics, plots and tables stay). Default: keep all.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Copy each trial's checkpoint (its run directory, last.pt included: ~1.1 GB for ResNet152) to "
              "--storage every N epochs and at the end; a restarted trial repeats at most N - 1 epochs.")
@click.option("--scheduler", type=click.Choice(SCHEDULERS), default="fifo", show_default=True,
              help="fifo: the full grid, every trial to its last epoch. asha: ASHA screening (Ray Tune's "
              "ASHAScheduler) stops the trials that trail at each rung; they are stopped_early in results.csv and "
              "screening.md says what it saved.")
@click.option("--grace-period", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --scheduler asha: the first rung, in epochs. Default: max(2, epochs // 4): slow starters "
              "(SGD, lr 1e-4) need time (short-horizon bias).")
@click.option("--reduction-factor", type=click.IntRange(min=2), default=3, show_default=True, metavar="R",
              help="With --scheduler asha: rungs at grace * R^k epochs; each rung keeps 1 in R trials.")
@click.option("--asha-metric", default="val_dice_volume_mean", show_default=True, metavar="NAME",
              help="With --scheduler asha: the val_ column of results.csv trials are ranked by (a *loss is "
              "minimised).")
@user_errors
def sweep(grid, name, dry_run, as_json, data, storage, address, gpus_per_trial, cpus_per_trial, max_concurrent,
          launcher, resume, restart_errored, epochs, batch_size, loss, max_steps, image_size, tracking_uri,
          no_tracking, folds, seeds, keep_checkpoints, checkpoint_every, scheduler, grace_period, reduction_factor,
          asha_metric):
    """Train every configuration of a grid on Ray Tune: packed onto GPUs, resumable, tracked in MLflow.

    \b
    orch sweep --grid paper --dry-run               # the 45 configurations and what each gets
    orch sweep --grid smoke --data prepared/        # a tiny sweep on this machine
    orch sweep --grid smoke --folds 5 --dry-run     # 5-fold cross-validation: 5 trials per configuration
    orch sweep --grid smoke --seeds 3 --dry-run     # every configuration with seeds 0, 1, 2
    orch sweep --grid paper --scheduler asha        # ASHA screening: stop the trailing trials early
    orch sweep --grid paper --address auto --storage s3://bucket/sweeps --tracking-uri http://head:5000
    """
    if as_json and not dry_run:
        raise click.UsageError("--json only applies to --dry-run")
    overrides = {"epochs": epochs, "batch_size": batch_size, "loss": loss, "max_steps": max_steps,
                 "image_size": image_size}
    cfg = SweepConfig(name=name, grid=grid, storage=storage, address=address, gpus_per_trial=gpus_per_trial,
                      cpus_per_trial=cpus_per_trial, max_concurrent=max_concurrent, resume=resume,
                      restart_errored=restart_errored, launcher=launcher, keep_checkpoints=keep_checkpoints,
                      checkpoint_every=checkpoint_every,
                      folds=folds, seeds=seeds, scheduler=scheduler, grace_period=grace_period,
                      reduction_factor=reduction_factor, asha_metric=asha_metric,
                      overrides={k: v for k, v in overrides.items() if v is not None})
    if dry_run:
        _print_plan(cfg, as_json)
        return
    from orchestrator.sweep import run_sweep

    cfg = cfg.replace(data=str(workdir.prepared_dir(data)))
    tracking = None if no_tracking else TrackingConfig(tracking_uri=tracking_uri)
    console = make_console()  # a live trial table on a terminal, one line per trial event elsewhere
    outcome = run_sweep(cfg, tracking=tracking, console=console)
    console.print(outcome.summary(), highlight=False, soft_wrap=True)
    failure = outcome.failure()
    if failure:  # diverged is a result (a too-high lr); an errored trial is a failure the caller must see
        raise click.ClickException(failure)


def _print_plan(cfg: SweepConfig, as_json: bool) -> None:
    """``--dry-run``: the planned trials and what each gets, as a table or (``--json``) as JSON."""
    from orchestrator.sweep import DEFAULT_GPU_SHARE
    from orchestrator.sweep import dry_run as plan

    plans = plan(cfg)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in plans], indent=2))
        return
    repeats = [f"{n} {what}" for n, what in ((cfg.folds, "folds"), (cfg.seeds, "seeds")) if n]
    per_row = (cfg.folds or 1) * (cfg.seeds or 1)
    what = f"{len(plans)} configurations" if not repeats else \
        f"{len(plans) // per_row} configurations x {' x '.join(repeats)} = {len(plans)} trials"
    if any(p.gpus for p in plans) or not plans:
        title = f"grid {cfg.grid}: {what} on GPUs"
    else:
        shares = ", ".join(f"{e} {g:g}" for e, g in DEFAULT_GPU_SHARE.items())
        title = (f"grid {cfg.grid}: {what} on CPUs (no GPU on this machine; with --address on "
                 f"a GPU cluster each trial gets a GPU share: {shares})")
    console = Console(width=max(Console().width, 120))
    console.print(_plan_table(plans, title))

COMMANDS = [sweep]
