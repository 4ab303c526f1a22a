"""Reading one slice (image + mask TIFF) and checking it against the dataset's formats.

Image: (256, 256, 3) uint8 RGB (pre-contrast, FLAIR, post-contrast). Mask: (256, 256) uint8 single channel with
values {0, 255} (or {0, 1}). Anything else (16-bit or float data, other sizes, truncated or unreadable files,
stray values in masks) is a :class:`~data_prep.errors.Problem`, never silently converted.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile

from data_prep.errors import Problem
from data_prep.layout import SliceSource

log = logging.getLogger(__name__)

IMAGE_SHAPE = (256, 256, 3)
MASK_SHAPE = (256, 256)
_REDOWNLOAD = "replace it with a good copy from the dataset (or delete the slice and its mask)"


def read_tiff(path: Path) -> tuple[np.ndarray | None, str | None, int]:
    """Decode the first page of a TIFF. Returns ``(array, None, nbytes)`` or ``(None, why, nbytes)``.

    A truncated file is caught explicitly: tifffile can return an empty page list (the real dataset stores the
    IFD at the end of the file) or read past the end of a strip, so the strip extents are checked against the
    file size before decoding.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"cannot read file ({e.strerror or e})", 0
    n = len(data)
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            if not tf.pages:
                return None, "not a readable TIFF (no image found: truncated or damaged file)", n
            page = tf.pages[0]
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
            if not ends or max(ends) > n:
                return None, f"truncated TIFF: image data runs past the end of the file ({n} bytes)", n
            arr = page.asarray(maxworkers=1)  # a thread pool per file costs more than it saves
    except Exception as e:  # tifffile raises many types for damaged files; all mean "unreadable"
        return None, f"not a readable TIFF ({type(e).__name__}: {e})", n
    return arr, None, n


def check_image(arr: np.ndarray) -> str | None:
    """Why ``arr`` is not a dataset image, or None when it is one."""
    if arr.dtype != np.uint8:
        return (f"image data is {arr.dtype} ({arr.dtype.itemsize * 8}-bit), expected 8-bit uint8; "
                "16-bit or float data is not converted silently")
    if arr.shape != IMAGE_SHAPE:
        return f"image shape is {arr.shape}, expected {IMAGE_SHAPE} (256x256 RGB)"
    return None


def check_mask(arr: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Turn a mask into (256, 256) uint8 {0, 1}; or explain why it is not a dataset mask."""
    if arr.dtype != np.uint8:
        return None, (f"mask data is {arr.dtype} ({arr.dtype.itemsize * 8}-bit), expected 8-bit uint8 "
                      "with values 0/255")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        return None, f"mask shape is {arr.shape}, expected a single channel {MASK_SHAPE}"
    if arr.shape != MASK_SHAPE:
        return None, f"mask shape is {arr.shape}, expected {MASK_SHAPE}"
    counts = np.bincount(arr.ravel(), minlength=256)  # 10x cheaper than np.unique on 64K pixels
    values = np.flatnonzero(counts)
    if counts[1:255].sum() == 0:
        return (arr == 255).astype(np.uint8), None
    if counts[2:].sum() == 0:
        return arr.astype(np.uint8, copy=True), None
    shown = ", ".join(str(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")
    return None, f"mask values are {{{shown}}}, expected only 0 and 255 (or 0 and 1)"


def load_slice(s: SliceSource, patient: str) -> tuple[np.ndarray | None, np.ndarray | None, list[Problem], int]:
    """Read and check one slice. Returns ``(image, mask01, problems, bytes_read)``; arrays are None on problems.

    ``image`` is (256, 256, 3) uint8 exactly as stored; ``mask01`` is (256, 256) uint8 in {0, 1}.
    """
    problems: list[Problem] = []
    nbytes = 0
    image = mask = raw_image = None
    if s.image is not None:
        raw_image, why, n = read_tiff(s.image)
        nbytes += n
        why = why or check_image(raw_image)
        if why:
            problems.append(Problem(str(s.image), why, _REDOWNLOAD, patient=patient, slice=s.n))
        else:
            image = raw_image
    if s.mask is not None:
        arr, why, n = read_tiff(s.mask)
        nbytes += n
        if why is None:
            mask, why = check_mask(arr)
            if why and raw_image is not None and raw_image.ndim >= 2 and arr.shape[:2] != raw_image.shape[:2]:
                # the pair disagrees: say so, whichever of the two is the odd one
                why = f"mask size {arr.shape[:2]} differs from its image's {raw_image.shape[:2]} ({why})"
        if why:
            problems.append(Problem(str(s.mask), why, _REDOWNLOAD, patient=patient, slice=s.n))
    if problems or image is None or mask is None:
        return None, None, problems, nbytes
    return image, mask, problems, nbytes


def slice_digest(n: int, image: np.ndarray, mask01: np.ndarray) -> bytes:
    """A content digest of one prepared slice (number, pixels, mask) for shard fingerprints.

    CRC32s, not sha256: the fingerprint only has to notice that the source changed between two runs, and
    sha256 over ~1 GB cost a third of the validation pass.
    """
    crc_i = zlib.crc32(np.ascontiguousarray(image).data)
    crc_m = zlib.crc32(np.ascontiguousarray(mask01).data)
    return struct.pack("<iII", int(n), crc_i, crc_m)
