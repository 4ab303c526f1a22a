"""`orch train`, `orch bench`, `orch models` run for real on tiny inputs (CPU)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from orchestrator.bench import BenchConfig, run_bench
from orchestrator.cli import main


def test_train_command_runs_and_prints_metrics(synthetic_prepared, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--data", str(synthetic_prepared), "--encoder", "resnet18",
                                    "--epochs", "1", "--max-steps", "1", "--image-size", "32", "--batch-size", "4",
                                    "--max-eval-slices", "24", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "status finished" in res.output and "dice_volume_mean" in res.output
    assert json.loads((out / "result.json").read_text())["epochs_completed"] == 1


def test_train_command_bad_value_is_a_clean_error(synthetic_prepared, tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(synthetic_prepared), "--lr", "-1", "--out", str(tmp_path)])
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
