"""`orch train`, `orch bench`, `orch models` run for real on tiny inputs (CPU)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from orchestrator.bench import BenchConfig, run_bench
from orchestrator.cli import main


def test_train_command_runs_and_prints_metrics(synthetic_prepared, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--data", str(synthetic_prepared), "--encoder", "resnet18",
                                    "--epochs", "1", "--max-steps", "1", "--image-size", "32", "--batch-size", "4",
                                    "--max-eval-slices", "24", "--device", "cpu", "--out", str(out), "--no-tracking"])
    assert res.exit_code == 0, res.output
    assert "status finished" in res.output and "dice_volume_mean" in res.output
    assert json.loads((out / "result.json").read_text())["epochs_completed"] == 1


def test_train_command_bad_value_is_a_clean_error(synthetic_prepared, tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(synthetic_prepared), "--lr", "-1", "--out", str(tmp_path),
                                    "--no-tracking"])
    assert res.exit_code == 1
    assert "lr=-1.0 must be a positive number" in res.output and "Traceback" not in res.output


def test_models_command_prints_parameter_counts():
    res = CliRunner().invoke(main, ["models"])
    assert res.exit_code == 0
    assert "14,328,209" in res.output and "67,156,881" in res.output


def test_bench_on_cpu_writes_json_lines(tmp_path):
    cfg = BenchConfig(encoders=("resnet18",), batch_size=2, image_size=32, steps=1, warmup=1, slices=4, device="cpu")
    rows = run_bench(cfg, tmp_path / "bench.jsonl")
    assert len(rows) == 1
    row = json.loads((tmp_path / "bench.jsonl").read_text().splitlines()[0])
    assert row["encoder"] == "resnet18" and row["device"].startswith("cpu")
    assert row["naive_img_per_s"] > 0 and row["loop_img_per_s"] > 0 and row["eval_img_per_s"] > 0
    assert "loop_graph_img_per_s" not in row  # no CUDA graphs on a CPU
    assert row["paper_hours_ours"] > 0


def test_train_prints_one_plain_line_per_epoch_off_a_terminal(synthetic_prepared, tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(synthetic_prepared), "--encoder", "resnet18",
                                    "--epochs", "2", "--max-steps", "1", "--image-size", "32", "--batch-size", "4",
                                    "--max-eval-slices", "24", "--device", "cpu", "--out", str(tmp_path / "run"),
                                    "--no-tracking"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1", "2"] and "dice_vol" in lines[0]
    assert "\x1b[" not in res.output  # no live table or colour codes in a log


def test_paper_flag_starts_from_the_papers_settings_and_options_still_win(monkeypatch, synthetic_prepared, tmp_path):
    import orchestrator.training as training
    from orchestrator.recipe import PAPER_SETTINGS

    seen = []

    def fake_fit(cfg, data, run_dir, **kw):  # argument handling only: the real loop is tested elsewhere
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(training, "fit", fake_fit)
    data = ["--data", str(synthetic_prepared), "--no-tracking"]
    CliRunner().invoke(main, ["train", *data, "--paper", "--tta", "--out", str(tmp_path / "paper")])
    CliRunner().invoke(main, ["train", *data, "--out", str(tmp_path / "recipe")])
    paper, recipe = seen
    assert {k: getattr(paper, k) for k in PAPER_SETTINGS} == {**PAPER_SETTINGS, "tta": True}
    assert recipe.loss == "bce_dice" and recipe.sampling == "tumour" and recipe.schedule == "cosine"


def test_train_folds_cross_validates_every_sample_patient_once(sample_prepared, tmp_path):
    """`orch train --folds 5` end to end on the real 12-patient sample (CPU, tiny steps)."""
    import pandas as pd

    out = tmp_path / "cv"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", "--data", str(sample_prepared), "--folds", "5", "--encoder", "resnet18", "--epochs", "1",
            "--max-steps", "1", "--image-size", "32", "--batch-size", "4", "--device", "cpu", "--out", str(out),
            "--tracking-uri", uri]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "cv_per_patient.csv")
    split = json.loads((sample_prepared / "manifest.json").read_text())["split"]
    assert sorted(table["patient"]) == sorted(split["train"] + split["val"] + split["test"])  # each exactly once
    assert sorted(table["fold"].unique()) == [1, 2, 3, 4, 5]
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["n_patients"] == 12 and summary["complete"] is True
    assert "5-fold cross-validation" in res.output and "Buda et al. 2019" in res.output
    assert (out / "cv_dice.png").stat().st_size > 0
    # MLflow: one parent run for the directory with the CV summary and table, one child run per fold.
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("orch-train")
    runs = c.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("orch.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["orch.trial_id"] for r in children) == [f"fold{k}" for k in range(1, 6)]
    assert parent.data.metrics["cv_patients"] == 12
    assert parent.data.metrics["cv_dice_volume_mean"] == pytest.approx(summary["mean"])
    assert {"cv_per_patient.csv", "cv_summary.json", "cv_dice.png"} <= {
        f.path.split("/")[-1] for f in c.list_artifacts(parent.info.run_id, "report")}
    assert all("test_dice_volume_mean" in r.data.metrics for r in children)
    # A rerun resumes: every fold is finished, nothing is trained again, no second parent run.
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "epoch 1" not in again.output
    assert len([r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("orch.role") == "sweep"]) == 1
