"""``orch synth`` / ``orch prep`` argument handling (library mocked) and small real runs through the CLI."""

from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner

import data_prep
from data_prep import PrepOptions
from orchestrator.cli import main


def _fake_manifest() -> dict:
    return {"patients": 2, "slices": 10, "tumour_slices": 3, "split": {"seed": 4, "train": ["a"], "val": ["b"],
            "test": []}, "excluded": [], "warnings": [], "source": {"bytes": 100}, "bytes_out": 40,
            "metadata": {"imputed_patients": ["a", "z"], "incomplete": ["a"]}, "institutions": {"a": "AA", "b": "BB"}}


def test_prep_options_reach_the_library(monkeypatch, tmp_path):
    seen = {}

    def fake_prepare(source, out, options=None, progress=None):
        seen.update(source=source, out=out, options=options)
        return _fake_manifest()

    monkeypatch.setattr(data_prep, "prepare", fake_prepare)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["prep", "SRC", "OUT", "--val-frac", "0.2", "--test-frac", "0.15",
                                    "--split-seed", "4", "--skip-invalid", "--workers", "1",
                                    "--max-missing-frac", "0.3", "--numeric-fill", "mean",
                                    "--compression", "gzip", "--compression-level", "1"])
    assert res.exit_code == 0, res.output
    assert (seen["source"], seen["out"]) == ("SRC", "OUT")
    assert seen["options"] == PrepOptions(val_frac=0.2, test_frac=0.15, split_seed=4, skip_invalid=True, workers=1,
                                          max_missing_frac=0.3, numeric_fill="mean", compression="gzip",
                                          compression_level=1)
    assert "prepared 2 patients, 10 slices (3 with tumour)" in res.output
    assert "metadata imputed for 1 patient(s), 1 flagged incomplete" in res.output
    recorded = tomllib.loads((tmp_path / "orch.toml").read_text())["data"]["prepared"]
    assert recorded == str((tmp_path / "OUT").resolve())


@pytest.mark.parametrize("args, text", [
    (["prep"], "expected SOURCE and OUT"),
    (["prep", "only-one"], "expected SOURCE and OUT"),
    (["prep", "--verify", "a", "b"], "--verify takes exactly one path"),
    (["prep", "a", "b", "--val-frac", "1.5"], "--val-frac"),
    (["prep", "a", "b", "--workers", "0"], "--workers"),
    (["prep", "a", "b", "--numeric-fill", "mode"], "--numeric-fill"),
    (["synth", "x", "--patients", "0"], "--patients"),
])
def test_bad_arguments_are_usage_errors(monkeypatch, tmp_path, args, text):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_prep, "prepare", lambda *a, **k: pytest.fail("library must not be called"))
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2
    assert text in res.output


def test_synth_prep_verify_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["synth", "s", "--patients", "3", "--seed", "2"])
    assert res.exit_code == 0 and (tmp_path / "s" / "kaggle_3m" / "data.csv").exists()
    res = runner.invoke(main, ["prep", "s", "p", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "prepared 3 patients" in res.output and "bytes in" in res.output
    assert "warning: only 1 validation patient and 1 test patient" in res.output and "--folds 5" in res.output
    assert (tmp_path / "orch.toml").exists()
    res = runner.invoke(main, ["prep", "--verify", "p"])
    assert res.exit_code == 0 and "all 3 shards verify" in res.output
    shard = next(iter(sorted((tmp_path / "p" / "shards").glob("*.h5"))))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    res = runner.invoke(main, ["prep", "--verify", "p"])
    assert res.exit_code == 1
    assert "damaged" in res.output and shard.name in res.output and "Traceback" not in res.output


def test_bad_source_exits_nonzero_with_the_problem_list(src, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # prep records OUT in ./orch.toml
    folder = sorted(p for p in src.iterdir() if p.is_dir())[0]
    (folder / f"{folder.name}_1_mask.tif").unlink()
    res = CliRunner().invoke(main, ["prep", str(src), str(tmp_path / "out"), "--workers", "1"])
    assert res.exit_code == 1
    assert "mask file missing" in res.output and "nothing was written" in res.output
    assert not (tmp_path / "out").exists()
    res = CliRunner().invoke(main, ["prep", str(src), str(tmp_path / "out"), "--workers", "1", "--skip-invalid"])
    assert res.exit_code == 0 and "excluded: 1" in res.output
    res = CliRunner().invoke(main, ["prep", "--verify", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "not a prepared data directory" in res.output


@pytest.mark.parametrize("n, warned", [(12, "only 1 validation patient and 1 test patient"), (40, "only 4 validation "
                                       "patients and 4 test patients"), (50, None), (110, None)])
def test_prep_warns_when_the_held_out_patients_are_few(n, warned):
    """LGG's sample (12 patients) splits 10/1/1 at the default fractions: the summary says the figures are noisy and
    what to do; the full set (110: 88/11/11) gets no warning."""
    from data_prep.prep import describe
    from data_prep.split import split_sizes

    sizes = split_sizes(n, 0.1, 0.1)
    manifest = _fake_manifest() | {"split": {"seed": 0, **{k: [f"{k}{i}" for i in range(v)] for k, v in sizes.items()}}}
    text = describe(manifest, 1.0, 1)
    assert f"{sizes['train']} train / {sizes['val']} val / {sizes['test']} test" in text
    if warned:
        assert warned in text and "orch train --folds 5" in text and "more patients" in text
    else:
        assert "warning: only" not in text
