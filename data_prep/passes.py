"""The per-patient work of ``orch prep``'s two passes (validate: :func:`scan_patient`; write: :func:`build_shard`)
and :func:`run_tasks`, which runs either over worker processes with progress."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import multiprocessing as mp
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from data_prep.errors import PrepError, Problem
from data_prep.layout import PatientSource
from data_prep.shards import check_shard, file_sha256, write_shard
from data_prep.tiffs import IMAGE_SHAPE, MASK_SHAPE, load_slice, slice_digest

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as patients finish ("validate", then "write")."""


@dataclass
class Scan:
    """Pass-1 result for one patient: which slices are good, their tumour pixel counts, content digest."""

    patient: str
    institution: str
    good: list[int] = field(default_factory=list)
    tumour_pixels: list[int] = field(default_factory=list)
    digest: str = ""
    problems: list[Problem] = field(default_factory=list)
    bytes_in: int = 0


def scan_patient(pat: PatientSource, salt: str) -> Scan:
    """Pass 1 for one patient: decode and check every slice, digest the good ones (nothing written)."""
    out = Scan(pat.patient, pat.institution)
    h = hashlib.sha256(salt.encode())
    for s in pat.slices:
        image, mask, problems, n = load_slice(s, pat.patient)
        out.bytes_in += n
        out.problems += problems
        if image is not None and not problems:
            out.good.append(s.n)
            out.tumour_pixels.append(int(mask.sum()))
            h.update(slice_digest(s.n, image, mask))
    out.digest = h.hexdigest()
    return out


def build_shard(pat: PatientSource, good: list[int], fingerprint: str, path: Path, known_sha: str | None,
           compression: str, level: int | None) -> dict:
    """Pass 2 for one patient: reuse the shard at ``path`` when sound and built from this content, else write it."""
    reused = False
    if path.exists():
        # Listed in the previous manifest: a matching hash proves the bytes. Left by a killed run (no manifest):
        # every chunk's checksum is read instead.
        reused = check_shard(path, fingerprint, sha256=known_sha, slices=len(good), deep=False) is None
        if not reused:
            log.info("rebuilding shard %s", path.name)
        elif known_sha is not None:
            return {"sha256": known_sha, "bytes": path.stat().st_size, "reused": True}
    if not reused:
        by_n = {s.n: s for s in pat.slices}
        images = np.empty((len(good), *IMAGE_SHAPE), np.uint8)
        masks = np.empty((len(good), *MASK_SHAPE), np.uint8)
        for i, n in enumerate(good):
            image, mask, problems, _ = load_slice(by_n[n], pat.patient)
            if image is None:
                raise PrepError(f"{problems[0] if problems else by_n[n].image}: changed while prep was running; "
                                "rerun `orch prep` once the source is stable")
            images[i], masks[i] = image, mask
        write_shard(path, pat.patient, np.array(good), images, masks, fingerprint, compression, level)
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size, "reused": reused}


def mp_context():
    """fork where the platform has it: spawn/forkserver re-import the caller's ``__main__``, which breaks
    scripts without a ``__main__`` guard and stdin scripts. The workers only decode TIFFs and write HDF5 files
    they open themselves, so no lock another parent thread might hold (a progress bar's) is touched."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def run_tasks(fn: Callable, tasks: list[tuple], workers: int, stage: str, progress: ProgressFn | None) -> list:
    """``[fn(*t) for t in tasks]`` over ``workers`` processes (in order), reporting progress as tasks finish."""
    total = len(tasks)
    if progress:
        progress(stage, 0, total)
    if workers <= 1 or total <= 1:
        results = []
        for i, t in enumerate(tasks):
            results.append(fn(*t))
            if progress:
                progress(stage, i + 1, total)
        return results
    with cf.ProcessPoolExecutor(min(workers, total), mp_context=mp_context()) as pool:
        futures = {pool.submit(fn, *t): i for i, t in enumerate(tasks)}
        results: list = [None] * total
        for done, fut in enumerate(cf.as_completed(futures), 1):
            results[futures[fut]] = fut.result()
            if progress:
                progress(stage, done, total)
    return results
