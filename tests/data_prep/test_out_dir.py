"""OUT is the user's folder too (issue 10): prep refuses a folder it did not make unless --force, never deletes or
overwrites a file it did not write, locks OUT against a second run, and treats ./orch.toml as the user's file."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from data_prep import PreparedData, PrepError, prepare, verify
from data_prep.atomic import is_temp_name, temp_path
from data_prep.outdir import JOURNAL, LOCK
from orchestrator import workdir
from orchestrator.cli import main


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _users_files(out: Path, manifest: bool = True) -> dict[str, bytes]:
    """What the issue's user had in OUT: an experiment's HDF5 file, a download in progress, notes, a manifest."""
    (out / "shards").mkdir(parents=True)
    with h5py.File(out / "shards" / "experiment.h5", "w") as f:
        f["weights"] = np.arange(10)
    (out / "shards" / "download.tmp").write_bytes(b"half a download")
    (out / "notes.txt").write_text("my notes\n")
    if manifest:
        (out / "manifest.json").write_text('{"experiment": "mine"}\n')
    return _snapshot(out)


def test_foreign_out_is_refused_and_left_untouched(src, tmp_path):
    out = tmp_path / "out"
    before = _users_files(out)
    with pytest.raises(PrepError) as err:
        prepare(src, out, workers=1)
    msg = str(err.value)
    assert "not a prepared data directory of orch" in msg and "--force" in msg and "notes.txt" in msg
    assert _snapshot(out) == before and not (out / LOCK).exists()


def test_force_writes_beside_the_users_files_and_never_removes_them(src, tmp_path):
    out = tmp_path / "out"
    before = _users_files(out, manifest=False)
    m = prepare(src, out, workers=1, force=True)
    assert len(PreparedData(out).load()) == m["slices"]
    after = _snapshot(out)
    assert {k: after[k] for k in before} == before
    prepare(src, out, workers=1, compression="gzip")  # now an orch folder: a rerun still keeps them
    after = _snapshot(out)
    assert {k: after[k] for k in before} == before
    verify(out)


@pytest.mark.parametrize("name", ["manifest.json", "metadata.parquet", "shards/{patient}.h5"])
def test_force_never_overwrites_a_file_at_an_orch_name(src, tmp_path, name):
    out = tmp_path / "out"
    patient = "_".join(min(d.name for d in src.iterdir() if d.is_dir()).split("_")[:3])
    target = out / name.format(patient=patient)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the user's own file")
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    with pytest.raises(PrepError) as err:
        prepare(src, out, workers=1, force=True)
    assert name.format(patient=patient) in str(err.value) and "not written by orch" in str(err.value)
    assert {k: v for k, v in _snapshot(out).items() if k != LOCK} == before  # nothing replaced, nothing added


def test_cli_refuses_a_foreign_out_unless_forced(src, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    before = _users_files(out, manifest=False)
    res = CliRunner().invoke(main, ["prep", str(src), str(out), "--workers", "1"])
    assert res.exit_code == 1 and "--force" in res.output and "Traceback" not in res.output
    assert _snapshot(out) == before and not (tmp_path / "orch.toml").exists()
    res = CliRunner().invoke(main, ["prep", str(src), str(out), "--workers", "1", "--force"])
    assert res.exit_code == 0, res.output
    assert {k: v for k, v in _snapshot(out).items() if k in before} == before


def test_empty_out_and_an_older_partial_prep_are_orchs(src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    ref = prepare(src, out, workers=1)
    # what an older orch killed before its manifest leaves: shards (and temp files), no manifest, no journal
    for name in ("manifest.json", JOURNAL, LOCK):
        (out / name).unlink()
    (out / "shards" / f"{Path(ref['shards'][0]['file']).name}.tmp").write_bytes(b"partial")
    assert prepare(src, out, workers=1) == ref
    assert not list((out / "shards").glob("*.tmp"))


# ---- one prep per OUT at a time

_HOLD = ("import sys; from pathlib import Path; from data_prep.outdir import hold_lock\n"
         "with hold_lock(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()")


@pytest.mark.parametrize("existing", [False, True], ids=["new_out", "prepared_out"])
def test_a_second_prep_refuses_while_another_holds_the_lock(src, tmp_path, existing):
    out = tmp_path / "out"
    if existing:
        prepare(src, out, workers=1)
    else:
        out.mkdir()
    before = _snapshot(out)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PrepError) as err:
            prepare(src, out, workers=1)
        msg = str(err.value)
        assert str(out / LOCK) in msg and f"pid {holder.pid}" in msg and "another `orch prep`" in msg
        assert {k: v for k, v in _snapshot(out).items() if k != LOCK} == {k: v for k, v in before.items()
                                                                           if k != LOCK}
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    prepare(src, out, workers=1)  # the lock went with its holder
    assert (out / LOCK).read_bytes() == b""  # emptied on release: the output stays byte-deterministic


_RUN = "import sys; from data_prep import prepare; prepare(sys.argv[1], sys.argv[2], workers=1)"


def test_two_concurrent_preps_never_corrupt_out(src, tmp_path):
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-c", _RUN, str(src), str(out)], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert any(rc == 0 for rc, _ in results), results
    for rc, err in results:
        assert rc == 0 or ("being written by another `orch prep`" in err and LOCK in err), err
    verify(out)


def test_temporary_names_are_unique_and_only_orchs_are_recognised(tmp_path):
    a, b = temp_path(tmp_path / "x.h5"), temp_path(tmp_path / "x.h5")
    assert a != b and a.exists() and b.exists() and is_temp_name(a.name) and is_temp_name(b.name)
    assert not any(is_temp_name(n) for n in ("download.tmp", "x.h5.tmp", ".x.h5.tmp", "experiment.h5"))


# ---- ./orch.toml is the user's file: read before any work, edited in place

_USERS_TOML = """\
# my project settings
[data]
# where the prepared data lives
prepared = "/old/place"  # set by orch
extra = ["a", "b"]

[sweep]
gpus = [0, 1]  # both GPUs
rate = 1.5
"""


def test_malformed_orch_toml_fails_before_any_work(src, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "orch.toml").write_text("[data\nprepared = 1\n")
    res = CliRunner().invoke(main, ["prep", str(src), str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 1
    assert "orch.toml" in res.output and "not valid TOML" in res.output and "line 1" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()
    assert (tmp_path / "orch.toml").read_text() == "[data\nprepared = 1\n"


@pytest.mark.parametrize("text, says", [
    ("[data\n", "not valid TOML"),
    ("data = 3\n", "must be a table"),
    ("[data]\nprepared = 5\n", "path in quotes"),
])
def test_bad_orch_toml_is_a_clean_error_for_every_reader(tmp_path, text, says):
    (tmp_path / "orch.toml").write_text(text)
    for call in (lambda: workdir.read(tmp_path), lambda: workdir.prepared_dir(None, tmp_path),
                 lambda: workdir.check(tmp_path)):
        with pytest.raises(workdir.OrchTomlError, match=says) as err:
            call()
        assert str(tmp_path / "orch.toml") in str(err.value)


def test_recording_keeps_the_users_comments_keys_and_types(tmp_path):
    (tmp_path / "orch.toml").write_text(_USERS_TOML)
    workdir.record_prepared(tmp_path / "prepared", tmp_path)
    text = (tmp_path / "orch.toml").read_text()
    assert text == _USERS_TOML.replace('"/old/place"', json.dumps(str((tmp_path / "prepared").resolve())))
    cfg = tomllib.loads(text)
    assert cfg["sweep"] == {"gpus": [0, 1], "rate": 1.5} and cfg["data"]["extra"] == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orch.toml"]  # no temporary file left
    (tmp_path / "orch.toml").write_text("# only a comment\n")
    workdir.record_prepared(tmp_path / "p2", tmp_path)
    assert (tmp_path / "orch.toml").read_text().startswith("# only a comment\n")
    assert workdir.prepared_dir(None, tmp_path) == (tmp_path / "p2").resolve()


def test_commands_that_read_orch_toml_show_its_error_cleanly(tmp_path, monkeypatch):
    """``orch train`` / ``orch sweep`` resolve --data through ``workdir.prepared_dir`` inside ``user_errors``:
    the same path here, with a one-line command instead of a training run."""
    import click

    from orchestrator.cli.common import user_errors

    @click.command()
    @user_errors
    def show_data():
        click.echo(workdir.prepared_dir(None))

    monkeypatch.chdir(tmp_path)
    (tmp_path / "orch.toml").write_text('[data]\nprepared = "/x"\nprepared = "/y"\n')
    res = CliRunner().invoke(show_data, [])
    assert res.exit_code == 1 and "orch.toml is not valid TOML" in res.output and "Traceback" not in res.output
