"""A worker node that dies mid-trial costs only the epochs since the trial's last checkpoint: the trial resumes
on a surviving node (ray.cluster_utils.Cluster: a head and two worker nodes with logical GPUs)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from orchestrator.config import SweepConfig
from orchestrator.sweep import run_sweep
from tests.sweep.conftest import TINY, trial_pids, write_grid

pytestmark = pytest.mark.slow


def _parent(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def _raylet_pid(node) -> int:
    return node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    workers = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address)
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds trial processes through /proc")
def test_trial_resumes_from_checkpoint_on_surviving_node(prepared, tmp_path, cluster):
    c, workers = cluster
    grid = write_grid(tmp_path / "one.csv", [{"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "epochs": 6,
                                              **TINY}])
    trial_dir = tmp_path / "sweeps" / "nodeloss" / "resnet18-adam-lr1e-03"
    removed: dict = {}

    def kill_the_trials_node() -> None:
        deadline = time.time() + 120
        # The second epoch's checkpoint: by then Tune has registered the first one (a checkpoint is written by
        # the trial before the driver processes its report).
        while time.time() < deadline and not any(int(c.name.split("_")[1]) >= 1
                                                 for c in trial_dir.glob("checkpoint_*")):
            time.sleep(0.1)
        time.sleep(1.0)
        for pid in trial_pids():
            for node in workers:
                if os.path.exists(f"/proc/{pid}") and _parent(pid) == _raylet_pid(node):
                    removed["node"] = node
        if "node" in removed:
            c.remove_node(removed["node"])

    killer = threading.Thread(target=kill_the_trials_node, daemon=True)
    killer.start()
    cfg = SweepConfig(grid=str(grid), name="nodeloss", data=str(prepared), storage=str(tmp_path / "sweeps"))
    out = run_sweep(cfg, tracking=None)  # joins the Cluster's Ray (already initialised)
    killer.join(10)

    assert "node" in removed, "the trial's node was not found"
    row = out.results.iloc[0]
    assert (row["status"], row["epochs_completed"], row["gpus"]) == ("finished", 6, 0.25)
    reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    epochs = [r["epoch"] for r in reports if not r.get("final")]
    assert len({r["pid"] for r in reports}) >= 2  # a new process took over the trial
    assert epochs.count(1) == 1 and epochs[-1] == 6  # ... from the checkpoint, not from scratch
