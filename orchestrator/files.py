"""Atomic file writes for orchestrator's outputs (run results, report tables, predicted masks): write a temporary
file beside the target, then rename it into place, so a reader or a killed process never sees a half-written file.
(data_prep keeps its own copy: it must not import orchestrator.)"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import UnsafePathError


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once, at import: os.umask can only be read by setting it
    os.umask(mask)
    return mask



_UMASK = _read_umask()


def inside(path: str | os.PathLike, owner: str | os.PathLike) -> Path:
    """``path`` resolved, if it lies strictly inside directory ``owner`` (links and ``..`` resolved); else
    ValueError. Every directory orch deletes is checked with it first: a name must never reach outside."""
    p, root = Path(path).resolve(), Path(owner).resolve()
    if p == root or not p.is_relative_to(root):
        raise UnsafePathError(f"refusing to touch {path}: it resolves to {p}, outside the directory {root} that orch owns "
                         "(a '..', a '/' or a link in a name?)")
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary path beside ``path`` (parents created), which then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name: two writers of the same target (a resumed trial beside its stale twin) never share a temp.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; a written file reads like any other
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))

