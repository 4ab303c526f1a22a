"""Names that become directories (trial ids, sweep names) are checked, and nothing orch deletes lies outside the
directory it owns: a trial id of ".." once deleted another sweep's scratch directory."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.config import ConfigError, SweepConfig
from orchestrator.grids import GridError, load_grid
from orchestrator.sweep.storage import keep_checkpoints as _keep_checkpoints
from orchestrator.sweep.trial import RUNS_ROOT_ENV, scratch_run_dir
from tests.sweep.conftest import write_grid

BAD = ["..", ".", "../other-sweep", "a/b", "/tmp/x", "a b", "x;rm -rf ~", "tri:al", "a\\b"]


@pytest.mark.parametrize("trial_id", BAD)
def test_a_grid_with_an_unsafe_trial_id_is_refused_naming_the_line(tmp_path, trial_id):
    grid = write_grid(tmp_path / "g.csv", [{"trial_id": "ok-1", "encoder": "resnet18"},
                                           {"trial_id": trial_id, "encoder": "resnet34"}])
    with pytest.raises(GridError, match=r"g\.csv line 3: trial_id .* is not a valid name.*letters, digits"):
        load_grid(str(grid))


@pytest.mark.parametrize("name", [*BAD, "trial\n"])
def test_an_unsafe_sweep_name_is_refused(name):
    with pytest.raises(ConfigError, match="sweep name .* is not a valid name"):
        SweepConfig(name=name, grid="smoke")


def test_the_cli_refuses_an_unsafe_name_cleanly(tmp_path):
    res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--name", "..", "--dry-run"])
    assert res.exit_code == 1 and "sweep name '..' is not a valid name" in res.output
    assert "Traceback" not in res.output
    weird = write_grid(tmp_path / "my grid.csv", [{"encoder": "resnet18"}])
    res = CliRunner().invoke(main, ["sweep", "--grid", str(weird), "--dry-run"])
    assert res.exit_code == 1 and "or pass --name" in res.output


def test_scratch_directories_never_reach_outside_their_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNS_ROOT_ENV, str(tmp_path))
    spec = {"storage": "/s", "sweep": "mine"}
    run_dir = scratch_run_dir({**spec, "trial_id": "t1"})
    sibling = run_dir.parent.parent / "other-sweep-0123456789"  # another sweep's scratch, next to ours
    (sibling / "t1").mkdir(parents=True)
    for trial_id in ("..", "../other-sweep-0123456789"):
        with pytest.raises(ConfigError, match="not a valid name"):
            scratch_run_dir({**spec, "trial_id": trial_id})
    with pytest.raises(ConfigError, match="not a valid name"):
        scratch_run_dir({"storage": "/s", "sweep": "..", "trial_id": "t1"})
    assert (sibling / "t1").is_dir() and run_dir.is_dir()


def test_pruning_checkpoints_never_deletes_outside_the_sweep(tmp_path):
    sweep = tmp_path / "sweeps" / "s"
    (sweep / "a").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for d in (sweep / "a", outside):
        (d / "best.pt").write_bytes(b"x" * 10)
    df = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["finished"] * 3,
                       "run_dir": [str(sweep / "a"), str(outside), str(sweep / ".." / ".." / "elsewhere")],
                       "test_dice_volume_mean": [0.9, 0.1, 0.2]})
    kept, pruned = _keep_checkpoints(df, 1, str(sweep))
    assert list(kept) == ["a"] and (outside / "best.pt").is_file()  # an edited results.csv deletes nothing outside
    assert "b" not in pruned and "c" not in pruned


def test_generated_trial_ids_are_valid_names(tmp_path):
    grid = write_grid(tmp_path / "g.csv", [{"encoder": "resnet18", "optimizer": "sgd", "lr": 1e8},
                                           {"encoder": "resnet18", "optimizer": "adam", "lr": 1e-4}])
    assert [e.trial_id for e in load_grid(str(grid))] == ["resnet18-sgd-lr1e+08", "resnet18-adam-lr1e-04"]


def test_the_default_scratch_root_is_per_user_and_a_bad_one_names_the_variable(tmp_path, monkeypatch):
    import os
    import tempfile

    from orchestrator.errors import UserError
    from orchestrator.sweep.trial import runs_root

    monkeypatch.delenv(RUNS_ROOT_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert runs_root() == tmp_path / f"orch-runs-{os.getuid()}"  # not one /tmp/orch-runs that another user owns
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(RUNS_ROOT_ENV, str(tmp_path / "a-file" / "runs"))
    with pytest.raises(UserError, match=r"scratch directory .*a-file/runs .*set ORCH_RUNS_DIR to a node-local"):
        scratch_run_dir({"storage": "/s", "sweep": "mine", "trial_id": "t1"})
