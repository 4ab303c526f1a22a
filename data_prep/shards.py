"""The HDF5 shard format: writer, checksum and verification live together with the format's constants.

One shard per patient, ``OUT/shards/<patient>.h5``::

    image    (N, 256, 256, 3) uint8    one chunk per slice, lossless compression, fletcher32
    mask     (N, 256, 256)    uint8    {0, 1}, same chunking/filters
    patient  (N,)             utf-8 strings
    slice    (N,)             int32    the slice number of the source file name (1-based)
    attrs: format_version, patient, fingerprint (of the source content the shard was built from, see below)

Shards are deterministic in content (no timestamps: ``track_times=False``; fixed library version bounds); with
gzip also in bytes. lzf is not byte-repeatable: liblzf leaves its hash table uninitialised (``INIT_HTAB`` 0) and
its output then depends on the stack it runs on, so one shard written twice in a long-lived process has differed
in a byte (same decoded data; fletcher32 and the manifest's sha256 always describe the bytes written). Written to a
temporary file unique to the writing process, flushed to disk and renamed into place, so a shard at its final name
is always complete.
The fingerprint (``data_prep.prep``) is a sha256 hex digest over a salt (format version, compression and level)
and, per slice kept, its number and the CRC32s of its image and mask pixels (``data_prep.tiffs.slice_digest``):
it notices a changed source or storage setting between two runs; it is no checksum of the source files' bytes.
Metadata blocks carry HDF5's own checksums (libver v110) and data chunks fletcher32, so damage is detectable
without the manifest; the manifest's sha256 catches everything else.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import h5py
import numpy as np

from data_prep.atomic import atomic_write
from data_prep.choices import COMPRESSIONS

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SHARD_DIR = "shards"
_LIBVER = ("v110", "v110")


def shard_name(patient: str) -> str:
    """The shard file name of a patient (format 1: one shard per patient)."""
    return f"{patient}.h5"


def check_compression(compression: str, level: int | None) -> None:
    """Raise ValueError naming the valid choices when ``compression``/``level`` is not a supported setting."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression={compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    if level is not None and (compression != "gzip" or not 0 <= level <= 9):
        raise ValueError(f"compression_level={level}: only gzip takes a level, 0-9")


def _filters(compression: str, level: int | None) -> dict:
    check_compression(compression, level)
    opts = None if compression == "lzf" else (4 if level is None else level)
    # shuffle would be a no-op on 1-byte elements, so it is left off.
    return {"compression": compression, "compression_opts": opts, "fletcher32": True, "track_times": False}


def write_shard(path: Path, patient: str, slices: np.ndarray, images: np.ndarray, masks: np.ndarray,
                fingerprint: str, compression: str = "lzf", level: int | None = None) -> None:
    """Write one patient's shard atomically: a unique temporary file -> fsync -> rename to ``path``.

    ``images`` (N, 256, 256, 3) uint8, ``masks`` (N, 256, 256) uint8 {0,1}, ``slices`` (N,) int.
    """
    n = len(slices)
    filt = _filters(compression, level)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w", libver=_LIBVER, track_order=False) as f:
            f.create_dataset("image", data=images, chunks=(1, *images.shape[1:]), **filt)
            f.create_dataset("mask", data=masks, chunks=(1, *masks.shape[1:]), **filt)
            f.create_dataset("patient", data=np.array([patient] * n, dtype=object),
                             dtype=h5py.string_dtype("utf-8"), track_times=False)
            f.create_dataset("slice", data=np.asarray(slices, dtype=np.int32), track_times=False)
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["patient"] = patient
            f.attrs["fingerprint"] = fingerprint

    atomic_write(path, write, fsync=True)


def is_orch_shard(path: Path) -> bool:
    """True when ``path`` is a shard ``orch prep`` wrote (HDF5 whose attributes name this format and the
    patient its file name says; the data are not read). Used to recognise a prep that stopped before its
    manifest, and to make sure only orch's own files are ever replaced or removed."""
    try:
        with h5py.File(path, "r") as f:
            return ("fingerprint" in f.attrs and "format_version" in f.attrs
                    and shard_name(str(f.attrs.get("patient"))) == path.name)
    except (OSError, ValueError, TypeError):
        return False


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (the manifest's per-shard checksum)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_shard(path: Path, fingerprint: str | None = None, sha256: str | None = None,
                slices: int | None = None, deep: bool = True) -> str | None:
    """Why the shard at ``path`` cannot be trusted, or None when it is sound.

    Compares the optional expectations (the manifest's ``sha256``, the source ``fingerprint`` it must have been
    built from, the slice count) and, when ``deep`` or no ``sha256`` is given, reads every chunk (fletcher32 and
    HDF5 metadata checksums verify on read; cost: one full decompression). A matching sha256 already proves the
    bytes are those written, so reuse on rerun passes ``deep=False``.
    """
    if not path.exists():
        return "missing"
    if sha256 is not None:
        got = file_sha256(path)
        if got != sha256:
            return f"sha256 {got[:12]}... differs from the manifest's {sha256[:12]}..."
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format_version") != FORMAT_VERSION:
                return f"format_version {f.attrs.get('format_version')} is not {FORMAT_VERSION}"
            if fingerprint is not None and f.attrs.get("fingerprint") != fingerprint:
                return "built from different source data"
            n = f["slice"].shape[0]
            if slices is not None and n != slices:
                return f"holds {n} slices, the manifest says {slices}"
            if f["image"].shape[0] != n or f["mask"].shape[0] != n or f["patient"].shape[0] != n:
                return "datasets have different lengths"
            if sha256 is not None and not deep:
                return None
            for name in ("image", "mask"):
                ds = f[name]
                buf = np.empty(ds.shape[1:], ds.dtype)
                for i in range(n):  # chunk by chunk: bounded memory, every checksum read
                    ds.read_direct(buf, np.s_[i])
    except (OSError, KeyError, ValueError) as e:
        return f"unreadable or failed its checksum ({e})"
    return None


def read_shard_into(path: Path, image_out: np.ndarray, mask_out: np.ndarray, slice_out: np.ndarray) -> None:
    """Read a whole shard into preallocated arrays (HDF5 decompresses straight into them, no extra copy)."""
    with h5py.File(path, "r") as f:
        f["image"].read_direct(image_out)
        f["mask"].read_direct(mask_out)
        slice_out[...] = f["slice"][:]
