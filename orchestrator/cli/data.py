"""``orch synth`` and ``orch prep``: glue between the command line and :mod:`data_prep`."""

from __future__ import annotations

import os
import time

import click

from data_prep.choices import COMPRESSIONS, NUMERIC_FILLS
from orchestrator import workdir
from orchestrator.cli.common import stage_progress, user_errors


def _default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--patients", type=click.IntRange(min=1), default=6, show_default=True, help="Number of patients.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option("--workers", type=click.IntRange(min=1), default=_default_workers, show_default="min(8, cores)",
              help="Worker processes (the files do not depend on it).")
@user_errors
def synth_cmd(out: str, patients: int, seed: int, workers: int) -> None:
    """Write a synthetic dataset in the exact LGG layout (OUT/kaggle_3m/...): try every command without the data.

    \b
    Example (an LGG-sized set, then prepare it):
      orch synth synthetic/ --patients 110 && orch prep synthetic/ prepared/
    """
    from data_prep.synth import make_synthetic

    click.echo(f"synth: writing {patients} patients to {out}")  # one stage: a line when it starts and ends
    root = make_synthetic(out, patients=patients, seed=seed, workers=workers)
    click.echo(f"wrote {patients} synthetic patients to {root}")


@click.command("prep")
@click.argument("paths", nargs=-1, metavar="SOURCE OUT")
@click.option("--verify", "verify_only", is_flag=True, help="Only recheck the shards of OUT: `orch prep --verify OUT`.")
@click.option("--skip-invalid", is_flag=True,
              help="Leave out bad slices/patients (recorded in manifest 'excluded') instead of stopping.")
@click.option("--workers", type=click.IntRange(min=1), default=_default_workers, show_default="min(8, cores)",
              help="Worker processes.")
@click.option("--val-frac", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Fraction of patients for validation.")
@click.option("--test-frac", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Fraction of patients for test.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the patient split.")
@click.option("--max-missing-frac", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Flag metadata rows missing more than this fraction of fields as incomplete.")
@click.option("--numeric-fill", type=click.Choice(NUMERIC_FILLS), default="median", show_default=True,
              help="Imputation for numeric metadata columns (categorical codes use the mode).")
@click.option("--compression", type=click.Choice(COMPRESSIONS), default="lzf", show_default=True,
              help="Lossless shard compression (built-in HDF5 filters).")
@click.option("--compression-level", type=click.IntRange(0, 9), default=None, help="gzip level (default 4).")
@click.option("--force", is_flag=True,
              help="Write into an OUT that holds other files (orch never deletes or overwrites a file it did not "
                   "write).")
@user_errors
def prep_cmd(paths: tuple[str, ...], verify_only: bool, skip_invalid: bool, workers: int, val_frac: float,
             test_frac: float, split_seed: int, max_missing_frac: float, numeric_fill: str, compression: str,
             compression_level: int | None, force: bool) -> None:
    """Validate SOURCE (an LGG kaggle_3m tree or a folder above it) and write sharded HDF5 + manifest to OUT.

    \b
    orch prep kaggle_3m/ prepared/         # validate everything, then write; records OUT in ./orch.toml
    orch prep --verify prepared/           # recheck every shard's checksum

    OUT must be new, empty or an earlier `orch prep` output (a stopped one resumes); one prep at a time per OUT.
    """
    from data_prep import PrepOptions, prepare
    from data_prep.prep import describe

    if verify_only:
        _verify(paths)
        return
    if len(paths) != 2:
        raise click.UsageError("expected SOURCE and OUT: orch prep SOURCE OUT (or orch prep --verify OUT)")
    source, out = paths
    workdir.check()  # a broken ./orch.toml fails now, not after OUT is written
    opts = PrepOptions(val_frac=val_frac, test_frac=test_frac, split_seed=split_seed, skip_invalid=skip_invalid,
                       workers=workers, max_missing_frac=max_missing_frac, numeric_fill=numeric_fill,
                       compression=compression, compression_level=compression_level, force=force)
    t0 = time.perf_counter()
    with stage_progress() as progress:
        manifest = prepare(source, out, options=opts, progress=progress)
    seconds = time.perf_counter() - t0
    recorded = workdir.record_prepared(out)
    click.echo(f"{describe(manifest, seconds, workers)}\n  -> {out} (recorded in {recorded})")


def _verify(paths: tuple[str, ...]) -> None:
    """``orch prep --verify OUT``."""
    from data_prep import verify

    if len(paths) != 1:
        raise click.UsageError("--verify takes exactly one path: orch prep --verify OUT")
    with stage_progress() as progress:
        summary = verify(paths[0], progress=progress)
    click.echo(f"{paths[0]}: all {summary['shards']} shards verify ({summary['slices']} slices)")


COMMANDS = [synth_cmd, prep_cmd]
