"""``orch bench`` as a user sees it at 80 columns (one warning, a table, a projection line, JSON only in --json's
file) and ``orch bench --grid paper``: a short packed trial epoch per depth and the grid's projected hours."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from orchestrator.bench import BenchConfig, GridDepth, grid_depths, grid_projection, packed_epochs
from orchestrator.config import ConfigError

TINY_BENCH = ["--steps", "1", "--image-size", "32", "--batch-size", "2", "--device", "cpu"]


def _bench(args: list[str]):
    from orchestrator.cli import main

    result = CliRunner().invoke(main, ["bench", *args], env={"COLUMNS": "80", "ORCH_PLAIN": "1"})
    assert result.exit_code == 0, result.output
    return result


def test_bench_prints_one_warning_a_whole_table_and_no_json_on_stdout(tmp_path):
    out = tmp_path / "bench.jsonl"
    result = _bench(["--encoders", "resnet18", *TINY_BENCH, "--json", str(out)])
    lines = result.output.splitlines()
    assert sum("no GPU" in line or "no CUDA" in line for line in lines) == 1, result.output
    assert not [line for line in lines if line.lstrip().startswith("{")], "JSON on stdout without --json"
    assert any(line.startswith("│ resnet18 ") for line in lines), result.output  # the encoder, not "resnet…"
    assert max(len(line) for line in lines if "│" in line) <= 80
    assert any(line.startswith("paper grid (45 configurations") for line in lines), "projection glued to the table"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["encoder"] for r in rows] == ["resnet18"] and rows[0]["loop_img_per_s"] > 0


def test_bench_grid_paper_projects_the_grid_from_a_packed_epoch_per_depth(tmp_path):
    out = tmp_path / "grid.jsonl"
    result = _bench(["--grid", "paper", "--encoders", "resnet18", *TINY_BENCH, "--json", str(out)])
    lines = result.output.splitlines()
    assert any(line.startswith("│ resnet18 ") for line in lines), result.output
    assert max(len(line) for line in lines if "│" in line) <= 80
    assert "…" not in result.output  # figures fold, never cut short
    line = next(x for x in lines if x.startswith("grid paper (9 trials; GPU share resnet18 0.25)"))
    assert "h projected" in line and "validation of 393 slices" in line
    [row] = [json.loads(x) for x in out.read_text().splitlines()]
    assert (row["encoder"], row["trials"], row["concurrent"]) == ("resnet18", 9, 1)  # a CPU does not pack GPUs
    assert row["img_per_s_trial"] > 0 and row["val_s"] > 0 and row["ckpt_mb"] > 40  # weights + Adam moments
    assert f"{row['hours']:.2f} h projected" in line


def test_bench_grid_rejects_an_unknown_grid():
    from orchestrator.cli import main

    result = CliRunner().invoke(main, ["bench", "--grid", "nope", "--encoders", "resnet18", *TINY_BENCH])
    assert result.exit_code != 0 and "nope" in result.output


def test_grid_depths_of_the_paper_grid_deepest_first_with_the_table_shares():
    from models import list_encoders
    from orchestrator.grids import load_grid
    from orchestrator.sweep.plan import DEFAULT_GPU_SHARE

    depths = grid_depths(load_grid("paper"), DEFAULT_GPU_SHARE, list(reversed(list_encoders())))
    assert [d.encoder for d in depths] == list(reversed(list_encoders()))
    assert {(d.trials, d.epochs) for d in depths} == {(9, 450)}
    assert [d.share for d in depths] == [DEFAULT_GPU_SHARE[d.encoder] for d in depths]


def test_grid_projection_arithmetic():
    cfg = BenchConfig(train_slices=1000, val_slices=100, eval_slices=300)
    depth = GridDepth("resnet50", trials=9, epochs=450, share=0.5)
    epochs = [{"img_per_s": 100.0, "val_s_per_slice": 0.01, "ckpt_s": 2.0, "ckpt_mb": 300.0, "mode": "graph"},
              {"img_per_s": 100.0, "val_s_per_slice": 0.01, "ckpt_s": 2.0, "ckpt_mb": 300.0, "mode": "graph"}]
    row = grid_projection(depth, epochs, cfg, n=2, checkpoint_every=2)
    # epoch: 1000 / 100 train + 100 * 0.01 validation + 2 / 2 checkpoint = 12 s; test (200 slices) 2 s per trial.
    assert row["epoch_s"] == pytest.approx(12.0) and row["img_per_s_total"] == pytest.approx(200.0)
    assert row["hours"] == pytest.approx((450 * 12.0 + 9 * 2.0) / 2 / 3600)
    failed = grid_projection(depth, [epochs[0], {"error": "OutOfMemoryError: boom"}], cfg, n=2)
    assert failed["error"].startswith("OutOfMemoryError") and "hours" not in failed


@pytest.mark.slow
def test_two_packed_trial_processes_each_measure_an_epoch():
    """The path a GPU packing takes: spawned processes, started together at a barrier, each its own epoch."""
    cfg = BenchConfig(encoders=("resnet18",), batch_size=2, image_size=32, steps=1, warmup=1, slices=4, device="cpu")
    rows = packed_epochs("resnet18", cfg, "cpu", 2)
    assert len(rows) == 2 and all("error" not in r for r in rows), rows
    assert all(r["img_per_s"] > 0 and r["val_s_per_slice"] > 0 and r["mode"] == "eager" for r in rows)


def test_gpu_share_table_is_validated(tmp_path):
    from orchestrator.sweep.plan import DEFAULT_GPU_SHARE, GPU_SHARE_FILE, load_gpu_share

    assert load_gpu_share(GPU_SHARE_FILE) == DEFAULT_GPU_SHARE
    bad = tmp_path / "gpu_share.csv"
    bad.write_text("encoder,gpu_share,source\nresnet18,1.5,typo\n")
    with pytest.raises(ConfigError, match=r"gpu_share\.csv: gpu_share '1\.5' of encoder 'resnet18'"):
        load_gpu_share(bad)


def _gpu_packing():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_packing.py"
    spec = importlib.util.spec_from_file_location("gpu_packing", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_packing_chooses_the_smallest_packing_within_3_percent_of_the_best():
    gp = _gpu_packing()
    row = {"packing": {1: {"aggregate_img_per_s": 1000.0}, 2: {"aggregate_img_per_s": 1500.0},
                       4: {"aggregate_img_per_s": 1520.0}}}
    assert gp.choose_packing(row)[0] == 2
    row["packing"][4] = {"aggregate_img_per_s": 1700.0}
    n, source = gp.choose_packing(row)
    assert n == 4 and source.startswith("measured:") and "x4 1700 img/s" in source
    assert gp.choose_packing({"packing": {1: {"error": "boom"}}}) == (0, "not measured")


def test_gpu_packing_projects_longer_trials_into_the_same_gpu_slots():
    gp = _gpu_packing()
    # A trial: 10 s measured for 2 epochs, its steady epoch 2 s (epoch ends 4 s and 6 s after its start).
    trial = {"start": 0.0, "end": 10.0, "share": 0.5, "epochs": [{"epoch": 1, "end": 4.0, "epoch_time_s": 3.0},
                                                                  {"epoch": 2, "end": 6.0, "epoch_time_s": 2.0}]}
    def later(t: float) -> dict:
        return {**trial, "start": t, "end": 10.0 + t,
                "epochs": [{**e, "end": e["end"] + t} for e in trial["epochs"]]}

    two = [trial, later(0.1)]
    assert gp.project(two, more_epochs=5) == pytest.approx(20.0)  # side by side: 10 + 5 x 2 s
    assert gp.project([*two, later(0.2)], more_epochs=5) == pytest.approx(40.0)  # the third waits
    assert gp.project(two, more_epochs=5, copies=2) == pytest.approx(40.0)  # 4 trials, 2 at a time
    assert gp.project([*two, {"error": "x", "start": 0.3}], more_epochs=5) == pytest.approx(20.0)
