"""Comparing shards by what they hold: lzf's bytes are not repeatable (data_prep/shards.py), their data are."""

from __future__ import annotations

from pathlib import Path

import h5py


def shard_content(path: Path) -> dict:
    """Every dataset's values (as bytes, with dtype and shape) and every attribute of the shard at ``path``."""
    with h5py.File(path, "r") as f:
        data = {k: (f[k].dtype.str, f[k].shape, f[k][()].tobytes()) for k in ("image", "mask", "slice")}
        data["patient"] = [bytes(x) if isinstance(x, bytes) else x for x in f["patient"][()]]
        data["attrs"] = {k: str(v) for k, v in f.attrs.items()}
    return data


def without_bytes(manifest: dict) -> dict:
    """A manifest without what records the shards' bytes (sha256, sizes)."""
    out = {k: v for k, v in manifest.items() if k != "bytes_out"}
    out["shards"] = [{k: v for k, v in s.items() if k not in ("sha256", "bytes")} for s in manifest["shards"]]
    return out
