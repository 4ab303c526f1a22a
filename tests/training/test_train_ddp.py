"""fit under torch.distributed (what Ray Train sets up for several workers): 2 gloo processes on the CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import tiny_cfg


def _worker(rank: int, world: int, init_file: str, data: str, run_dir: str, out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from orchestrator.training import fit

        reports = []
        result = fit(tiny_cfg(epochs=2, max_steps=1), data, run_dir, on_epoch=lambda r: reports.append(
            {"epoch": r.epoch, "rank": r.rank, "metrics": r.metrics}))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"reports": reports, "result": result.to_dict()}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_train_one_model(synthetic_prepared, tmp_path):
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(synthetic_prepared), str(run_dir), str(out_dir)),
             nprocs=2, join=True)
    r0, r1 = (json.loads((out_dir / f"rank{i}.json").read_text()) for i in (0, 1))
    assert [r["rank"] for r in r0["reports"]] == [0, 0] and [r["rank"] for r in r1["reports"]] == [1, 1]
    for a, b in zip(r0["reports"], r1["reports"], strict=True):  # all-reduced: every rank sees the same numbers
        for k in ("loss", "val_loss", "dice_volume_mean", "miou_2class"):
            assert a["metrics"][k] == b["metrics"][k]
    assert r0["result"]["test"] == r1["result"]["test"]
    assert r0["result"]["extra"]["world_size"] == 2
    stored = json.loads((run_dir / "result.json").read_text())  # written once, by rank 0
    assert stored["history"] == r0["result"]["history"] and (run_dir / "best.pt").exists()
