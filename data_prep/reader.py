"""Reading a prepared directory (``orch prep`` output): manifest, splits, slices, metadata, verification.

Lazy and fork-safe: nothing is opened in ``__init__`` except the manifest JSON; every ``load`` opens the shards
it needs and closes them, so a ``PreparedData`` can be pickled into Ray workers or used after ``fork``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from data_prep.errors import DamagedShards, PrepError
from data_prep.shards import FORMAT_VERSION, check_shard, read_shard_into

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


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
        except ValueError as e:
            raise PrepError(f"{path} is not valid JSON ({e}): rerun `orch prep SOURCE {self.root}`") from e
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise PrepError(f"{path}: format_version {self.manifest.get('format_version')} is not "
                            f"{FORMAT_VERSION}; rerun `orch prep SOURCE {self.root}` with this version of orch")
        self._shard_of = {p: s for s in self.manifest["shards"] for p in s["patients"]}

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

    def split_of(self, patient: str) -> str:
        for s in SPLITS:
            if patient in self.manifest["split"][s]:
                return s
        raise KeyError(f"patient {patient!r} is not in {self.root}")

    def load(self, split: str | None = None, patients: list[str] | None = None) -> SliceArrays:
        """Load a split (or the given ``patients``; both: their intersection) into memory in one call."""
        chosen = self.patients(split)
        if patients is not None:
            unknown = sorted(set(patients) - set(self._shard_of))
            if unknown:
                raise ValueError(f"patients not in {self.root}: {', '.join(unknown[:5])}")
            chosen = [p for p in chosen if p in set(patients)]
        chosen = sorted(chosen)
        # One shard per patient in format 1; shards listing several patients are read whole then filtered.
        plan = []
        total = 0
        for p in chosen:
            s = self._shard_of[p]
            n = s["slices"] if len(s["patients"]) == 1 else None
            plan.append((p, s, n))
            total += n if n is not None else 0
        if any(n is None for _, _, n in plan):
            return self._load_generic(chosen)
        image = np.empty((total, 256, 256, 3), np.uint8)
        mask = np.empty((total, 256, 256), np.uint8)
        pats = np.empty(total, dtype=object)
        slices = np.empty(total, np.int64)
        at = 0
        import h5py

        for p, s, n in plan:
            path = self.root / s["file"]
            read_shard_into(path, None, image[at: at + n], mask[at: at + n])
            with h5py.File(path, "r") as f:
                slices[at: at + n] = f["slice"][:]
            pats[at: at + n] = p
            at += n
        return SliceArrays(image, mask, pats.astype(str), slices)

    def _load_generic(self, chosen: list[str]) -> SliceArrays:
        import h5py

        parts = []
        for file in sorted({self._shard_of[p]["file"] for p in chosen}):
            with h5py.File(self.root / file, "r") as f:
                pat = f["patient"].asstr()[:]
                rows = np.flatnonzero(np.isin(pat, chosen))
                parts.append((f["image"][rows], f["mask"][rows], pat[rows], f["slice"][rows]))
        image, mask, pat, sl = (np.concatenate([p[i] for p in parts]) for i in range(4))
        order = np.lexsort((sl, pat))
        return SliceArrays(image[order], mask[order], pat[order].astype(str), sl[order].astype(np.int64))

    def metadata(self, raw: bool = False) -> pd.DataFrame:
        """The cleaned metadata table (``raw=True``: data.csv as read, before imputation)."""
        meta = self.manifest["metadata"]
        return pd.read_parquet(self.root / (meta["raw_file"] if raw else meta["file"]))

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


def verify(root: str | os.PathLike, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """``orch prep --verify OUT``: raise :class:`DamagedShards` naming each damaged shard; else a summary dict."""
    pd_ = PreparedData(root)
    bad = pd_.verify(progress)
    if bad:
        raise DamagedShards(str(root), bad)
    m = pd_.manifest
    return {"shards": len(m["shards"]), "patients": m["patients"], "slices": m["slices"]}
