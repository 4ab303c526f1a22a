"""`orch sweep` argument handling (CliRunner). Only the run itself is mocked; dry runs are real."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.config import SweepConfig
from tests.sweep.conftest import done_outcome


def test_dry_run_prints_every_configuration_with_its_resources():
    res = CliRunner().invoke(main, ["sweep", "--grid", "paper", "--dry-run", "--address", "auto"])
    assert res.exit_code == 0, res.output
    assert "grid paper: 45 configurations on GPUs" in res.output
    assert "resnet152-adam-lr1e-02" in res.output and "resnet18-rmsprop-lr1e-04" in res.output
    assert " 45 " in res.output


def test_dry_run_json_is_one_object_per_configuration():
    res = CliRunner().invoke(main, ["sweep", "--grid", "paper", "--dry-run", "--json", "--epochs", "3",
                                    "--gpus-per-trial", "0.5", "--address", "auto"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 45 and len({r["trial_id"] for r in rows}) == 45
    assert {r["config"]["epochs"] for r in rows} == {3}
    assert {r["resources"]["gpus"] for r in rows} == {0.5}


def test_options_become_the_sweep_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = done_outcome()
    outcome.summary.return_value = "sweep smoke: done"
    with mock.patch("orchestrator.sweep.runner.run_sweep", return_value=outcome) as run:
        res = CliRunner().invoke(main, [
            "sweep", "--grid", "smoke", "--name", "s1", "--data", str(tmp_path), "--storage", "s3://b/sweeps",
            "--address", "auto", "--gpus-per-trial", "2", "--cpus-per-trial", "4", "--max-concurrent", "3",
            "--resume", "--restart-errored", "--epochs", "5", "--batch-size", "8", "--loss", "dice",
            "--max-steps", "7", "--image-size", "128", "--tracking-uri", "http://head:5000"])
    assert res.exit_code == 0, res.output
    assert "sweep smoke: done" in res.output
    cfg: SweepConfig = run.call_args.args[0]
    assert (cfg.name, cfg.grid, cfg.data, cfg.storage, cfg.address) == ("s1", "smoke", str(tmp_path),
                                                                         "s3://b/sweeps", "auto")
    assert (cfg.gpus_per_trial, cfg.cpus_per_trial, cfg.max_concurrent, cfg.resume, cfg.restart_errored) == (
        2.0, 4.0, 3, True, True)
    assert cfg.overrides == {"epochs": 5, "batch_size": 8, "loss": "dice", "max_steps": 7, "image_size": 128}
    assert run.call_args.kwargs["tracking"].tracking_uri == "http://head:5000"


def test_tracking_uri_from_the_cluster_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.10:5000")
    with mock.patch("orchestrator.sweep.runner.run_sweep", return_value=done_outcome()) as run:
        res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--data", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert run.call_args.kwargs["tracking"].tracking_uri == "http://10.0.0.10:5000"


def test_no_tracking_and_default_data_from_orch_toml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "orch.toml").write_text(f'[data]\nprepared = "{tmp_path / "prep"}"\n')
    with mock.patch("orchestrator.sweep.runner.run_sweep", return_value=done_outcome()) as run:
        res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--no-tracking"])
    assert res.exit_code == 0, res.output
    assert run.call_args.args[0].data == str(tmp_path / "prep") and run.call_args.kwargs["tracking"] is None


def test_user_errors_are_clean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner()
    res = r.invoke(main, ["sweep", "--grid", "smoke"])
    assert res.exit_code == 1 and "run `orch prep SOURCE OUT`" in res.output and "Traceback" not in res.output
    res = r.invoke(main, ["sweep", "--grid", "nope", "--dry-run"])
    assert res.exit_code == 1 and "valid grids: " in res.output and "paper, recipe, smoke" in res.output
    res = r.invoke(main, ["sweep", "--grid", "smoke", "--json"])
    assert res.exit_code == 2 and "--json only applies to --dry-run" in res.output
    res = r.invoke(main, ["sweep", "--grid", "smoke", "--dry-run", "--gpus-per-trial", "1.5", "--address", "auto"])
    assert res.exit_code == 1 and "whole number" in res.output
    res = r.invoke(main, ["sweep", "--grid", "smoke", "--loss", "mse"])
    assert res.exit_code == 2


@pytest.mark.parametrize("counts, code, said", [
    ({"error": 3}, 1, "3 errored of 3 trials"),
    ({"finished": 2, "diverged": 1, "error": 1}, 1, "1 errored of 4 trials"),
    ({"finished": 1, "unfinished": 2}, 1, "2 unfinished of 3 trials"),
    ({"finished": 2, "diverged": 2}, 0, None),  # a diverged trial is a result: the paper's lr 1e-2 rows diverge
])
def test_exit_status_says_how_many_trials_errored(tmp_path, counts, code, said):
    outcome = done_outcome(**counts)
    outcome.results = [None] * sum(counts.values())
    outcome.results_csv = tmp_path / "results.csv"
    with mock.patch("orchestrator.sweep.runner.run_sweep", return_value=outcome):
        res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--data", str(tmp_path), "--no-tracking"])
    assert res.exit_code == code, res.output
    assert "sweep: done" in res.output  # the summary is printed either way
    if said:
        assert said in res.output and str(tmp_path / "results.csv") in res.output and "Traceback" not in res.output
