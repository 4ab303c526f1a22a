"""The working directory's ``orch.toml``: what ``orch prep`` records so later commands need fewer flags.

orch owns one key, written by ``record_prepared``::

    [data]
    prepared = "/abs/path/to/prepared"

The rest of the file is the user's: recording edits that one key in place (tomlkit), keeping comments, key order,
other keys and their types, and replaces the file atomically. A file that does not parse is an
:class:`OrchTomlError` naming it and the parse error, raised before any work (``check``), never a traceback.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

from orchestrator.config import ConfigError
from orchestrator.errors import MissingPathError
from orchestrator.files import atomic_write_text

FILENAME = "orch.toml"


class OrchTomlError(ConfigError):
    """``orch.toml`` cannot be read, parsed or updated; the message names the file and what to do."""


def _path(workdir: str | os.PathLike | None) -> Path:
    return Path(workdir or os.getcwd()) / FILENAME


def _text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise OrchTomlError(f"{p}: cannot be read ({e}): fix or move the file") from e


def read(workdir: str | os.PathLike | None = None) -> dict:
    """The parsed ``orch.toml`` of ``workdir`` (default: the current directory), or ``{}`` if there is none."""
    p = _path(workdir)
    if not p.exists():
        return {}
    try:
        cfg = tomllib.loads(_text(p))
    except tomllib.TOMLDecodeError as e:
        raise OrchTomlError(f"{p} is not valid TOML ({e}): fix that line (orch only reads and writes "
                            "`prepared` in its [data] table)") from e
    data = cfg.get("data", {})
    if not isinstance(data, dict):
        raise OrchTomlError(f"{p}: `data` must be a table ([data]), not {type(data).__name__}: fix the file")
    if "prepared" in data and not isinstance(data["prepared"], str):
        raise OrchTomlError(f"{p}: [data] prepared must be a path in quotes, not {data['prepared']!r}: fix the file")
    return cfg


def check(workdir: str | os.PathLike | None = None) -> None:
    """Raise :class:`OrchTomlError` now if ``orch.toml`` could not be read or updated later (before any work)."""
    if _path(workdir).exists():
        read(workdir)
        _document(_path(workdir))


def _document(p: Path):
    """``orch.toml`` as a tomlkit document (comments and formatting kept)."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(_text(p)) if p.exists() else tomlkit.document()
    except TOMLKitError as e:
        raise OrchTomlError(f"{p} is not valid TOML ({e}): fix that line") from e
    if "data" in doc and not isinstance(doc["data"], dict):
        raise OrchTomlError(f"{p}: `data` must be a table ([data]): fix the file")
    return doc


def record_prepared(prepared: str | os.PathLike, workdir: str | os.PathLike | None = None) -> Path:
    """Set ``[data] prepared`` in ``orch.toml`` to ``prepared`` (absolute); nothing else in the file changes.
    Atomic: a fresh temporary file beside it, then a rename (a link named orch.toml is followed, not replaced)."""
    import tomlkit

    p = _path(workdir)
    target = p.resolve() if p.is_symlink() else p
    doc = _document(target)
    if "data" not in doc:
        doc["data"] = tomlkit.table()
    doc["data"]["prepared"] = str(Path(prepared).resolve())
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else None  # the user's permissions stay
    try:
        atomic_write_text(target, tomlkit.dumps(doc), mode=mode)
    except OSError as e:
        raise OrchTomlError(f"cannot write {target} ({e.strerror or e}): pass --data {prepared} to later "
                            "commands instead") from e
    return p


def prepared_dir(explicit: str | os.PathLike | None, workdir: str | os.PathLike | None = None) -> Path:
    """Resolve the prepared-data directory: ``explicit`` if given, else ``orch.toml``'s, else a clear error."""
    if explicit:
        return Path(explicit)
    rec = read(workdir).get("data", {}).get("prepared")
    if rec:
        return Path(rec)
    p = _path(workdir).resolve()
    where = f"none recorded in {p}" if p.exists() else f"no {FILENAME} in {p.parent}"
    raise MissingPathError(
        f"no prepared data given and {where}: "
        "pass --data PREPARED_DIR, or run `orch prep SOURCE OUT` here first (it records OUT in orch.toml)"
    )
