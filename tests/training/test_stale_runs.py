"""A run directory's stored result or checkpoint is reused only by the configuration that made it: another one is a
clear error naming the fields (or, with --force, a fresh run that deletes only orch's files)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.config import ConfigError
from orchestrator.training import fit
from orchestrator.training.checkpoint import save_checkpoint
from tests.training.training_helpers import tiny_cfg

TINY = ["--encoder", "resnet18", "--epochs", "1", "--max-steps", "1", "--image-size", "32", "--batch-size", "4",
        "--max-eval-slices", "24", "--device", "cpu", "--no-tracking"]


@pytest.fixture(scope="module")
def finished(synthetic_prepared, tmp_path_factory):
    run = tmp_path_factory.mktemp("stale") / "run"
    return fit(tiny_cfg(), synthetic_prepared, run), run


@pytest.mark.parametrize("changes, named", [
    ({"encoder": "resnet34", "loss": "dice"}, ["encoder: 'resnet18' stored, 'resnet34' asked",
                                               "loss: 'bce_dice' stored, 'dice' asked"]),
    ({"epochs": 2}, ["epochs: 1 stored, 2 asked"]),
    ({"seed": 7}, ["seed: 0 stored, 7 asked"]),
    ({"head_relu": True}, ["head_relu: False stored, True asked", "pass --no-head-relu"]),
    ({"folds": 2, "fold": 1}, ["folds: None stored, 2 asked", "patients of train/val/test"]),
])
def test_a_finished_run_of_another_configuration_is_refused(finished, synthetic_prepared, changes, named):
    result, run = finished
    before = (run / "result.json").read_bytes()
    with pytest.raises(ConfigError) as e:
        fit(tiny_cfg(**changes), synthetic_prepared, run)
    for text in named + [str(run), "--out", "--force"]:
        assert text in str(e.value)
    assert (run / "result.json").read_bytes() == before  # nothing of the stored run touched


def test_the_same_configuration_returns_the_stored_result_across_runtime_fields(finished, synthetic_prepared):
    result, run = finished
    again = fit(tiny_cfg(eval_batch_size=8, amp="off", cuda_graph="off"), synthetic_prepared, run)
    assert again.test == result.test and again.history == result.history


def test_a_checkpoint_without_config_json_is_compared_too(synthetic_prepared, tmp_path):
    """A run directory from before config.json: its last.pt's train_config is the record."""
    run = tmp_path / "old"
    run.mkdir()
    old = tiny_cfg(loss="bce")
    save_checkpoint(run / "last.pt", model_config=old.model.to_dict(), train_config=old.to_dict(), model={},
                    epoch=1)
    with pytest.raises(ConfigError, match=r"last\.pt\): loss: 'bce' stored, 'bce_dice' asked"):
        fit(tiny_cfg(), synthetic_prepared, run)


def test_force_trains_afresh_and_deletes_only_orchs_files(synthetic_prepared, tmp_path):
    run = tmp_path / "run"
    fit(tiny_cfg(), synthetic_prepared, run)
    (run / "notes.txt").write_text("mine")
    result = fit(tiny_cfg(seed=3), synthetic_prepared, run, force=True)
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    assert (run / "notes.txt").read_text() == "mine"
    assert result.status == "finished"
    assert fit(tiny_cfg(seed=3), synthetic_prepared, run).test == result.test  # now the stored run is this one


def test_orch_train_default_directory_refuses_another_epochs_then_force(synthetic_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(main, ["train", "--data", str(synthetic_prepared), *TINY])
    assert first.exit_code == 0, first.output
    run = tmp_path / "runs" / "resnet18-adamw-lr1e-03"
    assert json.loads((run / "config.json").read_text())["epochs"] == 1

    second = runner.invoke(main, ["train", "--data", str(synthetic_prepared), *TINY, "--epochs", "2"])
    assert second.exit_code == 1 and "Traceback" not in second.output
    assert "epochs: 1 stored, 2 asked" in second.output and "--force" in second.output
    assert "status finished" not in second.output  # the old result is not printed as this run's

    forced = runner.invoke(main, ["train", "--data", str(synthetic_prepared), *TINY, "--epochs", "2", "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((run / "result.json").read_text())["epochs_completed"] == 2
