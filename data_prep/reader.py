"""Reading a prepared directory (``orch prep`` output): manifest, splits, slices, metadata, verification.

Lazy and fork-safe: nothing is opened in ``__init__`` except the manifest JSON; every ``load`` opens the shards
it needs and closes them, so a ``PreparedData`` can be pickled into Ray workers or used after ``fork``.
The manifest is checked when opened (every field this module reads, every path inside the directory), so an
edited or foreign manifest is one clear error naming the field, never a KeyError or a read outside the directory.
"""

from __future__ import annotations

import json
import logging
import mmap
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from data_prep.errors import DamagedShards, PrepError
from data_prep.outdir import METADATA, METADATA_RAW, safe_relative
from data_prep.shards import FORMAT_VERSION, check_shard, read_shard_into
from data_prep.split import SPLITS

log = logging.getLogger(__name__)


@dataclass
class SliceArrays:
    """Slices of one split in memory, sorted by (patient, slice).

    ``image`` (N, 256, 256, 3) uint8, ``mask`` (N, 256, 256) uint8 in {0, 1}, ``patient`` (N,) str,
    ``slice`` (N,) int (the source file's slice number).
    """

    image: np.ndarray
    mask: np.ndarray
    patient: np.ndarray
    slice: np.ndarray

    def __len__(self) -> int:
        return len(self.slice)

    def to_torch(self) -> dict:
        """The arrays as CPU tensors without copying: ``image`` (N,256,256,3) uint8, ``mask`` (N,256,256) uint8,
        ``slice`` (N,) int64 (patient ids stay a numpy array)."""
        import torch  # only here: reading prepared data must not need torch

        return {"image": torch.from_numpy(self.image), "mask": torch.from_numpy(self.mask),
                "slice": torch.from_numpy(self.slice)}


class PreparedData:
    """A prepared data directory. ``PreparedData("prepared/").load("train")`` -> :class:`SliceArrays`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.exists():
            hint = ("a prep may have stopped before finishing; rerun `orch prep SOURCE " f"{self.root}`"
                    if (self.root / "shards").exists() else f"run `orch prep SOURCE {self.root}` first")
            raise PrepError(f"{path} not found: {self.root} is not a prepared data directory ({hint})")
        try:
            self.manifest: dict = json.loads(path.read_text())
        except (ValueError, OSError) as e:
            raise PrepError(f"{path} cannot be read as JSON ({e}): rerun `orch prep SOURCE {self.root}`") from e
        if not isinstance(self.manifest, dict):
            raise PrepError(f"{path} is not an orch manifest (a JSON object): rerun `orch prep SOURCE {self.root}`")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise PrepError(f"{path}: format_version {self.manifest.get('format_version')} is not "
                            f"{FORMAT_VERSION}; rerun `orch prep SOURCE {self.root}` with this version of orch")
        # format 1: one shard per patient
        self._shard_of = _check_manifest(self.manifest, path, self.root)

    def __repr__(self) -> str:
        m = self.manifest
        return f"PreparedData({str(self.root)!r}: {m['patients']} patients, {m['slices']} slices)"

    def patients(self, split: str | None = None) -> list[str]:
        """Patient ids of ``split`` ("train" | "val" | "test"), or of all splits when None; sorted."""
        if split is None:
            return sorted(self._shard_of)
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
        return list(self.manifest["split"][split])

    def load(self, split: str | None = None, patients: list[str] | None = None,
             workers: int | None = None) -> SliceArrays:
        """Load a split (or the given ``patients``; both: their intersection) into memory in one call.

        Decompression is the cost (~1-1.3 ms CPU per slice), so large loads fan out over ``workers`` forked
        processes (default: up to 4 cores) writing into one shared anonymous mapping; ``workers=1`` stays in
        this process.
        """
        chosen = self.patients(split)
        if patients is not None:
            unknown = sorted(set(patients) - set(self._shard_of))
            if unknown:
                raise ValueError(f"patients not in {self.root}: {', '.join(unknown[:5])}")
            wanted = set(patients)
            chosen = [p for p in chosen if p in wanted]
        chosen = sorted(chosen)
        plan = []  # (shard path, first row in the output, slices)
        total = 0
        for p in chosen:
            n = self._shard_of[p]["slices"]
            plan.append((self.root / self._shard_of[p]["file"], total, n))
            total += n
        workers = _default_load_workers(total) if workers is None else max(1, workers)
        shared = workers > 1
        image = _alloc((total, 256, 256, 3), np.uint8, shared)
        mask = _alloc((total, 256, 256), np.uint8, shared)
        slices = _alloc((total,), np.int64, shared)
        if shared:
            _fill_parallel(plan, image, mask, slices, workers)
        else:
            for path, at, n in plan:
                _read(path, image[at: at + n], mask[at: at + n], slices[at: at + n])
        pats = np.repeat(np.array(chosen, dtype=str), [n for _, _, n in plan])
        return SliceArrays(image, mask, pats, slices)

    def metadata(self, raw: bool = False, all_rows: bool = False) -> pd.DataFrame:
        """The cleaned metadata, one row per prepared patient (imputed as ``manifest["metadata"]`` records).

        ``all_rows=True`` adds the data.csv rows that have no images (``has_images`` False); ``raw=True``
        gives data.csv as read, before imputation (missing values as ``<NA>``).
        """
        meta = self.manifest.get("metadata") or {}
        name = meta.get("raw_file", METADATA_RAW) if raw else meta.get("file", METADATA)
        table = pd.read_parquet(self.root / name)
        if not all_rows:
            table = table[table["Patient"].isin(set(self._shard_of))].reset_index(drop=True)
        return table

    def verify(self, progress: Callable[[str, int, int], None] | None = None) -> list[tuple[str, str]]:
        """Recheck every shard (sha256 against the manifest, every chunk's checksum); ``[(file, why), ...]``."""
        bad = []
        shards = self.manifest["shards"]
        for i, s in enumerate(shards):
            why = check_shard(self.root / s["file"], sha256=s["sha256"], slices=s["slices"])
            if why:
                bad.append((s["file"], why))
            if progress:
                progress("verify", i + 1, len(shards))
        return bad


def _check_manifest(m: dict, path: Path, root: Path) -> dict[str, dict]:
    """Check every manifest field the reader uses; ``{patient: shard entry}``. Raise PrepError naming the field."""
    def bad(field: str, what: str) -> PrepError:
        return PrepError(f"{path}: {field} {what}. This manifest was edited or not written by orch prep: rerun "
                         f"`orch prep SOURCE {root}` to rewrite it")

    for key in ("patients", "slices"):
        if not isinstance(m.get(key), int):
            raise bad(f"'{key}'", "is missing or not a number")
    shards = m.get("shards")
    if not isinstance(shards, list):
        raise bad("'shards'", "is missing or not a list")
    shard_of: dict[str, dict] = {}
    for i, s in enumerate(shards):
        where = f"shards[{i}]"
        if not isinstance(s, dict):
            raise bad(where, "is not an object")
        if not safe_relative(s.get("file")):
            raise bad(f"{where}.file", f"{s.get('file')!r} is not a path inside {root} (it must be relative, "
                                       "without '..')")
        if not isinstance(s.get("sha256"), str):
            raise bad(f"{where}.sha256", "is missing")
        if not isinstance(s.get("slices"), int) or s["slices"] < 0:
            raise bad(f"{where}.slices", f"{s.get('slices')!r} is not a slice count")
        pats = s.get("patients")
        if not isinstance(pats, list) or len(pats) != 1 or not isinstance(pats[0], str):
            raise bad(f"{where}.patients", f"{pats!r} is not one patient id (format {FORMAT_VERSION}: one shard "
                                           "per patient)")
        if pats[0] in shard_of:
            raise bad(f"{where}.patients", f"names {pats[0]}, which another shard holds too")
        shard_of[pats[0]] = s
    split = m.get("split")
    if not isinstance(split, dict):
        raise bad("'split'", "is missing or not an object")
    seen: dict[str, str] = {}
    for name in SPLITS:
        ids = split.get(name)
        if not isinstance(ids, list) or not all(isinstance(p, str) for p in ids):
            raise bad(f"split.{name}", "is missing or not a list of patient ids")
        unknown = [p for p in ids if p not in shard_of]
        if unknown:
            raise bad(f"split.{name}", f"names patient(s) that no shard holds: {', '.join(unknown[:5])}")
        twice = [p for p in ids if p in seen]
        if twice:
            raise bad(f"split.{name}", f"names patient(s) already in split.{seen[twice[0]]}: {', '.join(twice[:5])}")
        seen.update((p, name) for p in ids)
    meta = m.get("metadata", {})
    if not isinstance(meta, dict):
        raise bad("'metadata'", "is not an object")
    for key in ("file", "raw_file"):
        if key in meta and not safe_relative(meta[key]):
            raise bad(f"metadata.{key}", f"{meta[key]!r} is not a path inside {root}")
    return shard_of


def _read(path: Path, image: np.ndarray, mask: np.ndarray, slices: np.ndarray) -> None:
    try:
        read_shard_into(path, image, mask, slices)
    except (OSError, KeyError, ValueError, TypeError) as e:
        out = path.parent.parent
        raise PrepError(f"shard {path} is missing or damaged ({e}): check with `orch prep --verify {out}`, then "
                        f"rerun `orch prep SOURCE {out}` to rebuild it") from e


def _default_load_workers(total_slices: int) -> int:
    if total_slices < 400:  # ~0.3 s of work: a fork is not worth it
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _alloc(shape: tuple[int, ...], dtype, shared: bool) -> np.ndarray:
    """An array; ``shared``: backed by an anonymous MAP_SHARED mapping that forked children write into.
    The array holds the mapping, so its lifetime is the array's."""
    if not shared:
        return np.empty(shape, dtype)
    count = int(np.prod(shape))
    buf = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1), flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype, count=count).reshape(shape)


def _fill_parallel(plan: list[tuple[Path, int, int]], image: np.ndarray, mask: np.ndarray, slices: np.ndarray,
                   workers: int) -> None:
    """Read shards into ``image``/``mask``/``slices`` (shared mappings): ``workers - 1`` forked children and
    this process each take a share.

    fork, not spawn: the children need the parent's mapping, and they only run h5py reads and exit. A child that
    fails leaves its shards to be read again here, so the caller sees the real error.
    """
    groups: list[list] = [[] for _ in range(workers)]
    loads = [0] * workers
    for item in sorted(plan, key=lambda t: -t[2]):  # largest first onto the least-loaded worker
        k = loads.index(min(loads))
        groups[k].append(item)
        loads[k] += item[2]

    def work(group):
        for path, at, n in group:
            _read(path, image[at: at + n], mask[at: at + n], slices[at: at + n])

    def child(group):
        try:
            work(group)
        except BaseException:  # the parent reads this group again and raises the real error
            os._exit(1)

    ctx = mp.get_context("fork")
    procs = [(ctx.Process(target=child, args=(g,), daemon=True), g) for g in groups[1:] if g]
    for p, _ in procs:
        p.start()
    work(groups[0])
    for p, g in procs:
        p.join()
        if p.exitcode != 0:
            log.warning("a loader process failed (exit %s); reading its shards here", p.exitcode)
            work(g)


def verify(root: str | os.PathLike, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """``orch prep --verify OUT``: raise :class:`DamagedShards` naming each damaged shard; else a summary dict."""
    pd_ = PreparedData(root)
    bad = pd_.verify(progress)
    if bad:
        raise DamagedShards(str(root), bad)
    m = pd_.manifest
    return {"shards": len(m["shards"]), "patients": m["patients"], "slices": m["slices"]}
