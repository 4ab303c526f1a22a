"""Shared CLI pieces: options defined once, the translation of user errors into clean messages, the one
decision between live displays (a terminal) and plain lines (a log file, ``ray job submit``, CI), the metrics table.

Importing this module (and so every command module) loads no torch, ray or mlflow, nor does a user error leaving a
command: the errors caught come from ``orchestrator.errors`` and ``data_prep.errors``, which import nothing."""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from data_prep.errors import PrepError
from orchestrator.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

log = logging.getLogger(__name__)


def user_errors(fn):
    """Decorator: a user error (``orchestrator.errors.UserError``, ``data_prep.errors.PrepError``) leaving a
    command becomes ``click.ClickException`` (exit 1, the message, no traceback); any other exception is a bug and
    keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, PrepError) as e:
            raise click.ClickException(str(e)) from e

    return wrapper


data_option = click.option(
    "--data",
    "data",
    type=click.Path(file_okay=False),
    default=None,
    help="Prepared data directory (from `orch prep`). Default: the one recorded in ./orch.toml.",
)


PLAIN_ENV = "ORCH_PLAIN"  # ORCH_PLAIN=1: plain lines even on a terminal (tests, CI, screen recordings)


def interactive() -> bool:
    """True when a person watches a terminal: live tables and progress bars. False when stdout is a file, a pipe,
    a ``ray job submit`` or ``nohup`` log, CI, or ``ORCH_PLAIN`` is set (not 0): then one plain, flushed line
    per event, since a live display writes nothing useful there until it ends."""
    if os.environ.get(PLAIN_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def fmt_metric(v) -> str:
    """A metric in a table: 4 decimals below 10, 1 above; "-" for a missing or NaN value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def metrics_table(title: str, metrics: dict) -> Table:
    """``metrics`` as a two-column rich table (metric, value) under ``title``."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, fmt_metric(v))
    return t


PLAIN_WIDTH = 120  # a log file has no width: rich's default of 80 would cut rules and squeeze tables


def make_console() -> Console:
    """The rich Console a command prints through: auto-detected on a terminal, else forced plain (no colours,
    no live display: ``SweepProgress`` prints one line per trial event on it; ``PLAIN_WIDTH`` columns)."""
    from rich.console import Console

    if interactive():
        return Console()
    return Console(force_terminal=False, width=PLAIN_WIDTH)


# stage -> (what its bar says, the unit of its counts)
_STAGES = {"validate": ("validating slices (patients)", "patients"), "write": ("writing shards (patients)", "patients"),
           "verify": ("verifying shards", "shards")}


@contextmanager
def stage_progress(plain: bool | None = None, prefix: str = "prep"):
    """Progress of staged work (prep: validate, write, verify); yields the ``progress(stage, done, total)``
    callback that ``data_prep.prep.prepare`` takes.

    On a terminal a rich bar per stage; otherwise (``plain``, default ``not interactive()``) plain lines
    ``prep: validate 12/12 patients in 1.3 s``: a stage's start and end, and at most one line per tenth of it."""
    if plain is None:
        plain = not interactive()
    if plain:
        yield _StageLines(prefix)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description:<30}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(_STAGES.get(stage, (stage,))[0], total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield progress


class _StageLines:
    """``progress(stage, done, total)`` as plain lines, each flushed at once (a log file is read while it grows)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._stages: dict[str, dict] = {}  # stage -> {"t0", "tenth" last printed, "ended"}

    def __call__(self, stage: str, done: int, total: int) -> None:
        unit = _STAGES.get(stage, (stage, "items"))[1]
        st = self._stages.get(stage)
        if st is None or (st["ended"] and done < total):  # a new stage, or the same stage run again
            st = self._stages[stage] = {"t0": time.perf_counter(), "tenth": 0, "ended": False}
            click.echo(f"{self.prefix}: {stage} started, {total} {unit}")
        if st["ended"]:
            return
        if done >= total:
            st["ended"] = True
            click.echo(f"{self.prefix}: {stage} {done}/{total} {unit} in {time.perf_counter() - st['t0']:.1f} s")
        elif done * 10 // total > st["tenth"]:
            st["tenth"] = done * 10 // total
            click.echo(f"{self.prefix}: {stage} {done}/{total} {unit}")
