"""The prepared directory OUT on disk: which files are orch's, and one ``orch prep`` writing it at a time.

orch prep replaces or removes only files it knows it wrote:

- ``manifest.json`` when it parses as an orch manifest (``format_version``, ``shards``, ``split``), and the files
  it lists (shards under ``shards/``, the metadata tables);
- the files listed in the journal ``.orch-prep.json``, written before a run's first shard and rewritten when it
  ends: a run killed before its manifest still knows its own files;
- shards whose HDF5 attributes say orch wrote them (what a prep of an older orch, killed before its manifest,
  leaves); and the temporary names of :mod:`data_prep.atomic`.

A non-empty OUT with none of these is not orch's: prep refuses it unless ``force``, and even with ``force`` it
writes beside the files there, never over them. ``.orch-prep.lock`` holds an exclusive ``flock`` for a whole
run: a second run into the same OUT refuses at once, naming the holder (the kernel drops the lock when its holder
ends, even by kill -9, so a stale lock cannot block anyone).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from data_prep.atomic import atomic_write, is_temp_name
from data_prep.errors import PrepError
from data_prep.shards import FORMAT_VERSION, SHARD_DIR, is_orch_shard

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the rest still holds
    fcntl = None

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
METADATA = "metadata.parquet"
METADATA_RAW = "metadata_raw.parquet"
LOCK = ".orch-prep.lock"
JOURNAL = ".orch-prep.json"
_WRITER = "orch prep"  # the journal's "written_by"
_LEGACY_TEMPS = {f"{n}.tmp" for n in (MANIFEST, METADATA, METADATA_RAW)}  # older orch's fixed temp names


def safe_relative(rel: object) -> bool:
    """True for a plain relative path inside OUT (``shards/x.h5``): no absolute path, no ``..``, no empty part."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return False
    p = PurePosixPath(rel)
    return not p.is_absolute() and all(part not in ("", ".", "..") for part in rel.split("/"))


def _own_shard_path(rel: object) -> bool:
    """A shard path of the form prep writes: ``shards/<name>.h5``, one level, inside OUT."""
    return safe_relative(rel) and rel.count("/") == 1 and rel.startswith(f"{SHARD_DIR}/") and rel.endswith(".h5")


def is_orch_manifest(m: object) -> bool:
    """True when ``m`` (parsed manifest.json) has the shape orch writes."""
    return (isinstance(m, dict) and isinstance(m.get("format_version"), int) and isinstance(m.get("shards"), list)
            and isinstance(m.get("split"), dict))


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Survey:
    """What OUT holds. ``kind``: "new" (absent), "empty", "orch" (prepared or partly prepared by orch) or
    "foreign" (files orch did not write and no sign of orch). ``owned``: paths (relative, posix) of the files
    orch wrote; ``entries``: OUT's top-level names (for messages)."""

    out: Path
    kind: str
    owned: set[str] = field(default_factory=set)
    entries: list[str] = field(default_factory=list)


def survey(out: Path) -> Survey:
    """Classify ``out`` and list the files orch wrote there (cheap: only unrecorded shards are opened)."""
    if not out.exists():
        return Survey(out, "new")
    entries = sorted(e for e in os.listdir(out) if e != LOCK)
    if not entries:
        return Survey(out, "empty")
    owned: set[str] = set()
    recorded = False
    manifest = _load_json(out / MANIFEST)
    if is_orch_manifest(manifest):
        recorded = True
        owned.add(MANIFEST)
        owned |= {s["file"] for s in manifest["shards"] if isinstance(s, dict) and _own_shard_path(s.get("file"))}
        meta = manifest.get("metadata")
        if isinstance(meta, dict):
            owned |= {meta[k] for k in ("file", "raw_file") if meta.get(k) in (METADATA, METADATA_RAW)}
    journal = _load_json(out / JOURNAL)
    if isinstance(journal, dict) and journal.get("written_by") == _WRITER and isinstance(journal.get("files"), list):
        recorded = True
        owned.add(JOURNAL)
        owned |= {f for f in journal["files"]
                  if _own_shard_path(f) or f in (MANIFEST, METADATA, METADATA_RAW)}
    found = False
    shard_dir = out / SHARD_DIR
    if shard_dir.is_dir():
        for e in sorted(os.scandir(shard_dir), key=lambda e: e.name):
            rel = f"{SHARD_DIR}/{e.name}"
            if rel in owned:
                found = True
            elif e.name.endswith(".h5") and e.is_file(follow_symlinks=False) and is_orch_shard(Path(e.path)):
                owned.add(rel)
                found = True
    if recorded:
        return Survey(out, "orch", owned, entries)
    # No record: a prep of an older orch killed before its manifest leaves orch shards and, at most, its
    # metadata tables and temporary files beside them (its manifest was already removed).
    if found and all(e in (SHARD_DIR, METADATA, METADATA_RAW) or is_temp_name(e) or e in _LEGACY_TEMPS
                     for e in entries):
        owned |= {e for e in entries if e in (METADATA, METADATA_RAW)}
        return Survey(out, "orch", owned, entries)
    return Survey(out, "foreign", owned, entries)


def check_usable(s: Survey, force: bool) -> None:
    """Refuse an OUT that holds files orch did not write and no sign of orch, unless ``force``."""
    if s.kind != "foreign" or force:
        return
    shown = ", ".join(s.entries[:6]) + (f" ... ({len(s.entries)} entries)" if len(s.entries) > 6 else "")
    raise PrepError(
        f"OUT {s.out} is not empty and is not a prepared data directory of orch (no orch {MANIFEST} or {JOURNAL}); "
        f"it holds: {shown}. Choose a new or empty folder for OUT, or pass --force to write orch's files beside "
        "these (orch never deletes or overwrites a file it did not write).")


def check_conflicts(s: Survey, planned: list[str]) -> None:
    """Refuse when a file prep is about to write exists and is not orch's (``--force`` does not override this:
    replacing it would lose it)."""
    out = s.out
    bad = []
    if os.path.lexists(out / SHARD_DIR) and not (out / SHARD_DIR).is_dir():
        bad.append(f"{SHARD_DIR} (not a folder)")
    for rel in planned:
        p = out / rel
        if os.path.lexists(p) and (rel not in s.owned or p.is_symlink() or not p.is_file()):
            bad.append(rel)
    if bad:
        shown = ", ".join(bad[:10]) + (f" ... ({len(bad)} in all)" if len(bad) > 10 else "")
        raise PrepError(
            f"{len(bad)} path(s) in {out} have the names orch prep writes but were not written by orch: {shown}. "
            "orch will not overwrite them: move them out of OUT (or choose another OUT) and rerun.")


def write_journal(out: Path, files: set[str] | list[str]) -> None:
    """Record (atomically) the files orch has written or is about to write in ``out``."""
    doc = {"written_by": _WRITER, "format_version": FORMAT_VERSION, "files": sorted(set(files))}
    atomic_write(out / JOURNAL, lambda t: t.write_text(json.dumps(doc, indent=1) + "\n"))


def remove_temps(s: Survey, planned: list[str]) -> None:
    """Remove the temporary files killed runs left: :mod:`data_prep.atomic`'s temp names and, in a folder that
    was already orch's, an older orch's fixed ones (``<file prep writes>.tmp``); nothing else."""
    out = s.out
    legacy = ({f"{rel}.tmp" for rel in planned} | _LEGACY_TEMPS) if s.kind == "orch" else set()
    for d, prefix in ((out, ""), (out / SHARD_DIR, f"{SHARD_DIR}/")):
        if not d.is_dir():
            continue
        for e in os.scandir(d):
            if e.is_file(follow_symlinks=False) and (is_temp_name(e.name) or prefix + e.name in legacy):
                os.unlink(e.path)


def remove_stale(s: Survey, keep: list[str]) -> list[str]:
    """Remove orch's shards that this run does not write (patients gone from the source); returns them.
    Files orch did not write are kept, with a warning."""
    keep_set = set(keep)
    removed = []
    for rel in sorted(s.owned):
        if rel.startswith(f"{SHARD_DIR}/") and rel not in keep_set and (s.out / rel).is_file():
            (s.out / rel).unlink()
            removed.append(rel)
    shard_dir = s.out / SHARD_DIR
    if shard_dir.is_dir():
        strangers = sorted(e.name for e in os.scandir(shard_dir)
                           if f"{SHARD_DIR}/{e.name}" not in keep_set and f"{SHARD_DIR}/{e.name}" not in s.owned)
        if strangers:
            log.warning("left in place in %s (not written by orch, not part of the prepared data): %s", shard_dir,
                        ", ".join(strangers[:10]) + (" ..." if len(strangers) > 10 else ""))
    return removed


@contextlib.contextmanager
def hold_lock(out: Path):
    """Hold ``out/.orch-prep.lock`` exclusively (non-blocking) for the ``with`` block; raise PrepError naming the
    holder when another run has it. The file keeps the holder's pid while held and is emptied on release (it is
    never deleted: deleting a flock file lets two processes lock two different files)."""
    path = out / LOCK
    if fcntl is None:
        yield path
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise PrepError(f"cannot open the lock file {path} ({e.strerror or e}): check that OUT is writable") from e
    held = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid not yet recorded"
            raise PrepError(
                f"{out} is being written by another `orch prep` ({holder}; lock file {path}): wait for it to "
                "finish or choose another OUT. The lock goes as soon as that process ends, even if it is killed."
            ) from None
        except OSError as e:  # a filesystem without flock: go on, as orch did before it locked
            log.warning("could not lock %s (%s); make sure no other `orch prep` writes %s", path, e, out)
        if held:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        if held:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
