"""Copies of a cluster head's MLflow databases on the shared storage, so that `ray down` loses no run.

On AWS `ray down` terminates the head and deletes its disk, and a SQLite file must not be used live on NFS/EFS
(docs/design.md: its locking is not to be trusted there). So the head's MLflow server keeps its databases
(``mlflow.db``, the basic-auth ``basic_auth.db``) on local disk, and this helper, started beside the server by
clusters/gpu.yaml:

- ``restore SHARED LOCAL``: before the server starts, copies each ``*.db`` of SHARED into LOCAL where LOCAL has
  none (a new head after `ray down` gets the runs back; an existing head's own files are newer and stay);
- ``every SECONDS LOCAL SHARED``: copies each ``*.db`` of LOCAL to SHARED every SECONDS, and once more when it is
  stopped (SIGTERM: the pid-file kill of the next `ray up`, or the instance shutting down);
- ``once LOCAL SHARED``: one copy now (what to run with `ray exec` right before `ray down`).

Each copy is SQLite's online backup (a consistent snapshot while the server writes), written to a temporary file
beside the target and renamed into place: the copy on the shared storage is always a whole database. The standard
library's ``sqlite3`` does it; no copy tool is needed on the node.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
from pathlib import Path

import click

log = logging.getLogger(__name__)


def copy_db(src: Path, dest: Path) -> None:
    """A consistent copy of the SQLite database ``src`` at ``dest`` (atomic: temporary file, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(tmp)
        try:
            source.backup(target)
        finally:
            target.close()
        os.replace(tmp, dest)
    finally:
        source.close()
        tmp.unlink(missing_ok=True)


def backup(local: Path, shared: Path) -> list[str]:
    """Copy every ``*.db`` of ``local`` into ``shared``; returns the names copied."""
    names = []
    for db in sorted(Path(local).glob("*.db")):
        copy_db(db, Path(shared) / db.name)
        names.append(db.name)
    return names


def restore(shared: Path, local: Path) -> list[str]:
    """Copy each ``*.db`` of ``shared`` into ``local`` where ``local`` has no file of that name; returns the names
    restored."""
    names = []
    for db in sorted(Path(shared).glob("*.db")) if Path(shared).is_dir() else []:
        if not (Path(local) / db.name).exists():
            copy_db(db, Path(local) / db.name)
            names.append(db.name)
    return names


def every(seconds: float, local: Path, shared: Path, stop: threading.Event | None = None) -> None:
    """``backup`` every ``seconds`` until ``stop`` is set (SIGTERM sets it), then once more."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("copying the databases of %s to %s every %g s", local, shared, seconds)
    while not stop.wait(seconds):
        _backup_logged(local, shared)
    _backup_logged(local, shared)


def _backup_logged(local: Path, shared: Path) -> None:
    try:
        log.info("copied %s to %s", ", ".join(backup(local, shared)) or "nothing", shared)
    except (OSError, sqlite3.Error) as e:  # the shared storage away for a moment: the next round copies again
        log.warning("could not copy the MLflow databases of %s to %s: %s", local, shared, e)


@click.group()
def main() -> None:
    """Copies of the MLflow databases of a cluster head on the shared storage (see the module's docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


@main.command("restore")
@click.argument("shared", type=click.Path(path_type=Path))
@click.argument("local", type=click.Path(path_type=Path))
def restore_cmd(shared: Path, local: Path) -> None:
    """Copy SHARED's databases into LOCAL where LOCAL has none."""
    names = restore(shared, local)
    click.echo(f"restored {', '.join(names)} from {shared}" if names else f"nothing to restore from {shared}")


@main.command("once")
@click.argument("local", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("shared", type=click.Path(path_type=Path))
def once_cmd(local: Path, shared: Path) -> None:
    """Copy LOCAL's databases into SHARED now."""
    click.echo(f"copied {', '.join(backup(local, shared)) or 'nothing'} to {shared}")


@main.command("every")
@click.argument("seconds", type=click.FloatRange(min=1))
@click.argument("local", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("shared", type=click.Path(path_type=Path))
def every_cmd(seconds: float, local: Path, shared: Path) -> None:
    """Copy LOCAL's databases into SHARED every SECONDS, and once more on SIGTERM."""
    every(seconds, local, shared)


if __name__ == "__main__":
    main()
