"""Atomic file writes with temporary names no other process can share.

Every file of a prepared directory lands as: a fresh temporary file beside its target (a name unique to this
process and call, created exclusively) -> optional fsync -> ``os.replace`` onto the target. Two processes never
write the same temporary file, and a file at its final name is always complete. The temporary names have one
recognisable form (:func:`is_temp_name`), so a later run removes exactly the leftovers of killed runs and
nothing else.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".orch-tmp"
# .<target name>.<pid>.<8 hex>.orch-tmp
_TEMP_RE = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")


def is_temp_name(name: str) -> bool:
    """True for the temporary names :func:`temp_path` makes (and only those)."""
    return _TEMP_RE.match(name) is not None


def temp_path(target: Path) -> Path:
    """Create (exclusively, empty, permissions as for any new file under the umask) and return a temporary file
    beside ``target``. Unlike ``tempfile.mkstemp`` the file is not left at mode 0600 after the rename."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {target}")


def atomic_write(target: Path, write: Callable[[Path], None], fsync: bool = False) -> None:
    """``write(tmp)`` to a fresh temporary file, then rename it onto ``target``; the temporary file never
    outlives a failed ``write``."""
    tmp = temp_path(target)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
