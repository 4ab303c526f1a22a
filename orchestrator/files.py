"""Atomic file writes for orchestrator's outputs (run results, report tables, predicted masks): write a temporary
file beside the target, then rename it into place, so a reader or a killed process never sees a half-written file.
(data_prep keeps its own copy: it must not import orchestrator.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def inside(path: str | os.PathLike, owner: str | os.PathLike) -> Path:
    """``path`` resolved, if it lies strictly inside directory ``owner`` (links and ``..`` resolved); else
    ValueError. Every directory orch deletes is checked with it first: a name must never reach outside."""
    p, root = Path(path).resolve(), Path(owner).resolve()
    if p == root or not p.is_relative_to(root):
        raise ValueError(f"refusing to touch {path}: it resolves to {p}, outside the directory {root} that orch owns "
                         "(a '..', a '/' or a link in a name?)")
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary path beside ``path`` (parents created), which then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
