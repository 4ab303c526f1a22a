"""Crash safety: a prep killed with SIGKILL finishes on rerun with byte-identical output; damage is caught."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep import PreparedData, prepare, verify
from data_prep.atomic import temp_path
from data_prep.errors import DamagedShards
from data_prep.synth import make_synthetic
from tests.data_prep.shard_helpers import shard_content


def _digests(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def kill_tree(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("kill"), patients=6, seed=11, min_slices=8, max_slices=10)


# The child pauses 0.3 s after each shard it writes, so the kill lands mid-run however loaded the machine is.
_CHILD = ("import sys, time; from data_prep import prepare; "
          "prepare(sys.argv[1], sys.argv[2], workers=1, "
          "progress=lambda stage, done, total: time.sleep(0.3) if stage == 'write' and done else None)")


@pytest.mark.slow
def test_kill9_mid_prep_then_rerun_gives_identical_output(kill_tree, tmp_path):
    ref = tmp_path / "ref"
    prepare(kill_tree, ref, workers=1)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(kill_tree), str(out)])
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill once some shards are in place but the run is not finished
            done = list((out / "shards").glob("*.h5")) if (out / "shards").exists() else []
            if len(done) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "prep finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    with pytest.raises(Exception, match="stopped before finishing"):
        PreparedData(out)
    killed_shards = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.h5")}
    assert 2 <= len(killed_shards) < 6
    # what a kill in the middle of writing a shard leaves: a partial temp file (never a partial .h5), with
    # orch's own temporary name (data_prep.atomic), and an older orch's fixed one for a shard of this run
    temp_path(out / "shards" / "TCGA_ZZ_0000.h5").write_bytes(b"\x89HDF partial")
    pending = sorted({Path(s["file"]).name for s in json.loads((ref / "manifest.json").read_text())["shards"]}
                     - set(killed_shards))[0]
    (out / "shards" / f"{pending}.tmp").write_bytes(b"\x89HDF partial")
    m = prepare(kill_tree, out, workers=1)
    assert _digests(out) == _digests(ref)  # byte-identical: shards, metadata, manifest; temp file gone
    assert m == json.loads((ref / "manifest.json").read_text())
    # the complete shards the killed run left were reused, not rewritten
    for name, mtime in killed_shards.items():
        assert (out / "shards" / name).stat().st_mtime_ns == mtime


def test_flipped_byte_is_caught_by_verify_and_rebuilt(synth_tree, tmp_path):
    out = tmp_path / "out"
    m = prepare(synth_tree, out, workers=1)
    assert verify(out)["shards"] == m["patients"]
    target = out / m["shards"][1]["file"]
    good = target.read_bytes()
    data = bytearray(good)
    pos = len(data) // 2
    data[pos] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(DamagedShards) as err:
        verify(out)
    assert m["shards"][1]["file"] in str(err.value) and len(err.value.damaged) == 1
    # a rerun rebuilds exactly the damaged shard and the result verifies again
    damaged = m["shards"][1]["file"]
    others = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in m["shards"] if s["file"] != damaged}
    prepare(synth_tree, out, workers=1)
    assert target.read_bytes() == good
    verify(out)
    assert all((out / f).stat().st_mtime_ns == t for f, t in others.items())


def test_damaged_shard_without_manifest_is_rebuilt(synth_tree, tmp_path):
    """A shard left by a killed run whose chunk no longer checks out is rebuilt (fletcher32 path)."""
    from data_prep.shards import check_shard

    out = tmp_path / "out"
    m = prepare(synth_tree, out, workers=1)
    (out / "manifest.json").unlink()
    target = out / m["shards"][0]["file"]
    good = target.read_bytes()
    (tmp_path / "good.h5").write_bytes(good)
    data = bytearray(good)
    data[len(data) // 3] ^= 0xFF
    target.write_bytes(bytes(data))
    assert check_shard(target) is not None
    prepare(synth_tree, out, workers=1)
    assert check_shard(target) is None  # rebuilt: the same data (lzf's bytes may differ, data_prep/shards.py)
    assert shard_content(target) == shard_content(tmp_path / "good.h5")


def test_changed_options_rebuild_and_stale_shards_go(src, tmp_path):
    """A patient gone from the source loses its shard; a file orch did not write stays, even in shards/."""
    out = tmp_path / "out"
    first = prepare(src, out, workers=1)
    (out / "shards" / "TCGA_XX_0000.h5").write_bytes(b"not orch's")
    gone = sorted(d for d in src.iterdir() if d.is_dir())[0]
    shutil.rmtree(gone)
    m = prepare(src, out, workers=1, compression="gzip", compression_level=1)
    assert m["storage"]["compression"] == "gzip" and m["patients"] == first["patients"] - 1
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(
        [Path(s["file"]).name for s in m["shards"]] + ["TCGA_XX_0000.h5"])
    assert (out / "shards" / "TCGA_XX_0000.h5").read_bytes() == b"not orch's"
    verify(out)


def test_missing_shard_gives_a_clear_error(synth_tree, tmp_path):
    from data_prep import PrepError

    out = tmp_path / "out"
    m = prepare(synth_tree, out, workers=1)
    (out / m["shards"][0]["file"]).unlink()
    pd_ = PreparedData(out)
    for workers in (1, 2):
        with pytest.raises(PrepError, match="missing or damaged.*orch prep --verify"):
            pd_.load(workers=workers)
