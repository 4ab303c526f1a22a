"""fit under torch.distributed (what Ray Train sets up for several workers): 2 gloo processes on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.training.training_helpers import tiny_cfg


class _Killed(Exception):
    pass


def _worker(rank: int, world: int, init_file: str, data: str, run_dir: str, out_dir: str) -> None:
    import torch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from orchestrator.training import fit

        # As in the sweep's Ray Train path: rank 0 owns run_dir, the other ranks get scratch dirs of their own.
        mine = run_dir if rank == 0 else f"{run_dir}-rank{rank}"
        calls = {}
        for label in ("first", "resumed", "finished"):
            reports = []

            def on_epoch(r, label=label, reports=reports):
                reports.append({"epoch": r.epoch, "rank": r.rank, "metrics": r.metrics})
                if label == "first":  # as if killed after the epoch-1 checkpoint (on every rank)
                    raise _Killed

            try:
                result = fit(tiny_cfg(epochs=2, max_steps=1), data, mine, on_epoch=on_epoch).to_dict()
            except _Killed:
                result = None
            calls[label] = {"reports": reports, "result": result}
            dist.barrier()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(calls))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_train_one_model(synthetic_prepared, tmp_path):
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(synthetic_prepared), str(run_dir), str(out_dir)),
             nprocs=2, join=True)
    r0, r1 = (json.loads((out_dir / f"rank{i}.json").read_text()) for i in (0, 1))
    # every rank reports; the resume (read from rank 0's run_dir, broadcast) trains only the missing epoch
    assert [r["epoch"] for r in r0["first"]["reports"]] == [1] and [r["rank"] for r in r1["first"]["reports"]] == [1]
    assert [r["epoch"] for r in r1["resumed"]["reports"]] == [2] and r0["finished"]["reports"] == []
    assert r1["finished"]["reports"] == []
    for label in ("first", "resumed"):  # all-reduced: every rank sees the same numbers
        for a, b in zip(r0[label]["reports"], r1[label]["reports"], strict=True):
            for k in ("loss", "val_loss", "dice_volume_mean", "miou_2class"):
                assert a["metrics"][k] == b["metrics"][k]
    assert r0["resumed"]["result"]["test"] == r1["resumed"]["result"]["test"]
    assert r1["finished"]["result"]["history"] == r0["resumed"]["result"]["history"]
    assert r0["resumed"]["result"]["extra"]["world_size"] == 2
    stored = json.loads((run_dir / "result.json").read_text())  # written by rank 0 only
    assert [h["epoch"] for h in stored["history"]] == [1, 2] and (run_dir / "best.pt").exists()
    assert not (tmp_path / "run-rank1" / "result.json").exists() and not (tmp_path / "run-rank1" / "last.pt").exists()
