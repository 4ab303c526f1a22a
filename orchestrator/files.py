"""orchestrator's file-tree utilities: atomic writes, the containment check and the one tree walk.

Atomic writes for orchestrator's outputs (run results, report tables, predicted masks, ``orch.toml``): write a
temporary file beside the target, then rename it into place, so a reader or a killed process never sees a
half-written file. (data_prep keeps its own copy: it must not import orchestrator.)
:func:`inside` keeps every path orch writes or deletes within the directory it owns; :func:`walk_tree` lists the
folders of a tree whose folders may be symlinks (``orch predict``'s INPUT, ``orch evaluate``'s PRED and TRUTH).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from orchestrator.errors import UnsafePathError

log = logging.getLogger(__name__)


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
        raise UnsafePathError(f"refusing to touch {path}: it resolves to {p}, outside the directory {root} that orch "
                              "owns (a '..', a '/' or a link in a name?)")
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], mode: int | None = None) -> None:
    """``write(tmp)`` fills a temporary path beside ``path`` (parents created), which then replaces ``path``.

    The file gets permission bits ``mode`` (e.g. those of the file it replaces), by default those of any new
    file under the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name: two writers of the same target (a resumed trial beside its stale twin) never share a temp.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
    """``text`` (UTF-8) into ``path`` by :func:`atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), mode)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """``data`` into ``path`` by :func:`atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data), mode)


def walk_tree(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, sorted file names)`` for ``root`` and every folder below it, in sorted order, each real folder once.

    A symlinked folder is followed (a tree assembled from links to patients stored elsewhere works) unless its
    target overlaps a folder this walk already covers: a link back to a folder above it (a loop, which would
    otherwise repeat the tree until paths grow too long) or a second way into the same folders (its slices
    would be read twice). Such a link is skipped with a warning naming it. ``root`` is resolved first (the folders
    yielded lie under ``root.resolve()``), so that "already covered" compares real paths. Symlinked files are read
    like files."""
    root = root.resolve()
    covered = [root]  # real roots of the trees walked: ``root`` and the target of every link followed
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = [name for name in sorted(dirnames) if _follow(here, here / name, covered)]
        yield here, sorted(filenames)  # os.walk descends into exactly ``dirnames``, in this order


def _follow(here: Path, sub: Path, covered: list[Path]) -> bool:
    """Whether :func:`walk_tree` enters the folder ``sub`` of ``here``: a plain folder always; a symlinked one when
    its target overlaps no tree in ``covered`` (then the target joins ``covered``), else a warning names it."""
    if not sub.is_symlink():
        return True
    target = sub.resolve()
    if here.resolve().is_relative_to(target):
        log.warning("symlink %s -> %s loops back to a folder above it: not followed", sub, target)
        return False
    if any(target.is_relative_to(c) or c.is_relative_to(target) for c in covered):
        log.warning("symlink %s -> %s leads into folders already read: skipped (each folder is read "
                    "once)", sub, target)
        return False
    covered.append(target)
    return True
