"""Shared CLI pieces: options defined once, and the translation of user errors into clean messages."""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
import sys

import click

from orchestrator.config import ConfigError

log = logging.getLogger(__name__)

# Exceptions whose message is written for the user (which file/value, what is wrong, what to do).
# Areas add their own error base classes here (data_prep.errors.PrepError, ...), imported lazily below.
_USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, NotADirectoryError)


def user_errors(fn):
    """Decorator: turn the library's user-facing errors into ``click.ClickException`` (exit 1, no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_error_types() as e:
            raise click.ClickException(str(e)) from e

    return wrapper


def _user_error_types() -> tuple[type[BaseException], ...]:
    types = list(_USER_ERRORS)
    from data_prep.errors import PrepError
    from orchestrator.predict import PredictError

    types += [PrepError, PredictError]
    tracking = sys.modules.get("orchestrator.tracking.store")  # loaded iff a TrackingError could have been raised
    if tracking is not None:
        types.append(tracking.TrackingError)
    return tuple(types)


data_option = click.option(
    "--data",
    "data",
    type=click.Path(file_okay=False),
    default=None,
    help="Prepared data directory (from `orch prep`). Default: the one recorded in ./orch.toml.",
)


@contextmanager
def stage_progress():
    """A rich progress bar with one row per stage (prep: validate, write, verify); yields the
    ``progress(stage, done, total)`` callback that ``data_prep.prep.prepare`` takes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    labels = {"validate": "validating slices (patients)", "write": "writing shards (patients)",
              "verify": "verifying shards"}
    with Progress(TextColumn("{task.description:<30}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield progress
