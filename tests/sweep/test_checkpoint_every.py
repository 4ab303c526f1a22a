"""``orch sweep --checkpoint-every N``: a trial reports a checkpoint to the storage every N epochs and at the end
(not every epoch), and a trial restarted from the last one continues from that epoch, not from scratch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.config import ConfigError, SweepConfig, TrainConfig
from orchestrator.sweep.plan import TrialPlan, plan_sweep
from orchestrator.training.checkpoint import read_checkpoint
from tests.sweep.conftest import TINY, trial_pids, write_grid


def test_checkpoint_every_is_validated_and_reaches_every_trial_plan():
    from orchestrator.grids import load_grid

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="checkpoint_every"):
            SweepConfig(grid="smoke", checkpoint_every=bad)
    cfg = SweepConfig(grid="smoke", checkpoint_every=3)
    plans = plan_sweep(cfg, load_grid("smoke"), use_gpus=False)
    assert plans and {p.checkpoint_every for p in plans} == {3}
    assert TrialPlan.from_dict(plans[0].to_dict()) == plans[0]
    old = plans[0].to_dict()
    del old["checkpoint_every"]  # a plan recorded before the option
    assert TrialPlan.from_dict(old).checkpoint_every == 1


def test_cli_passes_checkpoint_every_and_rejects_zero(monkeypatch):
    from orchestrator.cli import main

    seen = {}
    monkeypatch.setattr("orchestrator.cli.sweep._print_plan", lambda cfg, as_json: seen.setdefault("cfg", cfg))
    ok = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--dry-run", "--checkpoint-every", "4"])
    assert ok.exit_code == 0, ok.output
    assert seen["cfg"].checkpoint_every == 4
    bad = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--dry-run", "--checkpoint-every", "0"])
    assert bad.exit_code == 2 and "--checkpoint-every" in bad.output


def _spec(prepared: Path, tmp_path: Path, every: int, epochs: int) -> dict:
    cfg = TrainConfig(encoder="resnet18", optimizer="adam", lr=1e-3, epochs=epochs, **TINY)
    plan = TrialPlan("ckpt-every", cfg, gpus=0.0, cpus=1.0, workers=0, checkpoint_every=every)
    return plan.to_dict() | {"data": str(prepared), "sweep": "ckpt", "storage": str(tmp_path / "sweeps"),
                             "tracking": None}


class _Reports:
    """A ``report`` for ``train_loop``: records each report's epoch, whether it carried a checkpoint and the epoch
    of the last.pt inside it, and keeps a copy of the checkpoint of epoch ``keep`` (the run directory moves on)."""

    def __init__(self, keep_dir: Path | None = None, keep: int | None = None):
        self.rows: list[tuple] = []
        self.keep_dir, self.keep = keep_dir, keep

    def __call__(self, metrics: dict, checkpoint=None) -> None:
        ckpt_epoch = None
        if checkpoint is not None:
            last = Path(checkpoint.path) / "last.pt"
            ckpt_epoch = read_checkpoint(last)["epoch"] if last.exists() else "final"
            if self.keep is not None and metrics.get("epoch") == self.keep:
                shutil.copytree(checkpoint.path, self.keep_dir)
        self.rows.append((metrics.get("epoch"), bool(metrics["final"]), ckpt_epoch))


def test_trial_checkpoints_every_n_epochs_and_resumes_from_the_last_one(prepared, tmp_path):
    from ray.train import Checkpoint

    from orchestrator.sweep.trial import train_loop

    spec = _spec(prepared, tmp_path, every=2, epochs=5)
    first = _Reports(keep_dir=tmp_path / "kept", keep=2)
    row = train_loop(spec, first, None)
    assert row["status"] == "finished" and row["epochs_completed"] == 5
    # Epochs 2 and 4 carry a checkpoint holding their own last.pt; 1, 3 and 5 none; the final row the run's end.
    assert [(e, c) for e, final, c in first.rows if not final] == [(1, None), (2, 2), (3, None), (4, 4), (5, None)]
    assert first.rows[-1][1:] == (True, "final")

    # A restart from epoch 2's checkpoint (what Tune hands a restarted trial) trains epochs 3..5 only.
    resumed = _Reports()
    row = train_loop(spec, resumed, Checkpoint.from_directory(str(tmp_path / "kept")))
    assert row["status"] == "finished" and row["epochs_completed"] == 5
    assert [(e, c) for e, final, c in resumed.rows if not final] == [(3, None), (4, 4), (5, None)]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds trial processes through /proc")
def test_killed_trial_resumes_from_its_last_every_n_checkpoint_in_a_ray_sweep(prepared, tmp_path):
    """A real local Ray sweep with checkpoint_every=2: the trial process is SIGKILLed after its first checkpoint
    (epoch 2); Tune restarts it from that checkpoint and it finishes all 6 epochs."""
    import ray

    from orchestrator.sweep import run_sweep

    grid = write_grid(tmp_path / "every.csv", [{"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3,
                                                "epochs": 6, **TINY}])
    trial_dir = tmp_path / "sweeps" / "every" / "resnet18-adam-lr1e-03"
    killed: list[int] = []

    def driver_saw_epoch_2() -> bool:
        # The driver writes result.json as it processes reports: once epoch 2's row is there, Tune has registered
        # its checkpoint (a checkpoint folder alone may not be registered yet when the process dies).
        path = trial_dir / "result.json"
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
        return any(r.get("epoch", 0) >= 2 for r in rows)

    def kill_the_trial() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not driver_saw_epoch_2():
            time.sleep(0.1)
        for pid in trial_pids():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        killer = threading.Thread(target=kill_the_trial, daemon=True)
        killer.start()
        cfg = SweepConfig(grid=str(grid), name="every", data=str(prepared), storage=str(tmp_path / "sweeps"),
                          checkpoint_every=2)
        out = run_sweep(cfg, tracking=None)
        killer.join(10)
    finally:
        ray.shutdown()
    assert killed, "the trial process was not found"
    row = out.results.iloc[0]
    assert (row["status"], row["epochs_completed"]) == ("finished", 6)
    reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    pids = list(dict.fromkeys(r["pid"] for r in reports))
    assert len(pids) >= 2, "no new process took the trial over"
    after = [r["epoch"] for r in reports if r["pid"] == pids[-1] and not r.get("final")]
    # The new process starts after an every-2 checkpoint (epoch 2 or 4), not from scratch and not mid-interval.
    assert after and after[0] in (3, 5) and after[-1] == 6, [(r.get("epoch"), r["pid"], r.get("checkpoint_dir_name"))
                                                             for r in reports]
    checkpointed = {r["epoch"] for r in reports if r.get("checkpoint_dir_name") and not r.get("final")}
    assert checkpointed <= {2, 4}, checkpointed


def test_resuming_with_another_checkpoint_every_is_refused_naming_the_original(tmp_path):
    from orchestrator.grids import load_grid
    from orchestrator.sweep.storage import check_plan

    grid = load_grid("smoke")
    first = plan_sweep(SweepConfig(grid="smoke", checkpoint_every=3), grid, use_gpus=False)
    check_plan(str(tmp_path), "orch-sweep.json", first, "s")
    check_plan(str(tmp_path), "orch-sweep.json", first, "s")  # the same value resumes
    other = plan_sweep(SweepConfig(grid="smoke", checkpoint_every=5), grid, use_gpus=False)
    with pytest.raises(ConfigError, match=r"started with --checkpoint-every 3, not 5; rerun it with "
                                          r"--checkpoint-every 3, or choose a new --name"):
        check_plan(str(tmp_path), "orch-sweep.json", other, "s")


def test_a_rerun_with_other_options_is_refused_before_ray_starts(tmp_path):
    from orchestrator.grids import load_grid
    from orchestrator.sweep.schedulers import SchedulerConfig
    from orchestrator.sweep.storage import check_options, check_plan

    asha = SchedulerConfig("asha", grace_period=1, reduction_factor=2).record(2)
    check_options(str(tmp_path), "orch-sweep.json", "s", asha, 3)  # nothing recorded yet: a first run
    check_plan(str(tmp_path), "orch-sweep.json",
               plan_sweep(SweepConfig(grid="smoke", checkpoint_every=3), load_grid("smoke"), use_gpus=False), "s",
               asha)
    check_options(str(tmp_path), "orch-sweep.json", "s", asha, 3)  # the same options resume
    with pytest.raises(ConfigError, match="started with --checkpoint-every 3, not 1"):
        check_options(str(tmp_path), "orch-sweep.json", "s", asha, 1)
    with pytest.raises(ConfigError, match="--reduction-factor 2 .*, not .*--reduction-factor 3"):
        check_options(str(tmp_path), "orch-sweep.json", "s",
                      SchedulerConfig("asha", grace_period=1, reduction_factor=3).record(2), 3)


def test_the_cli_refuses_another_checkpoint_every_without_starting_ray(tmp_path, prepared):
    from orchestrator.cli import main
    from orchestrator.grids import load_grid
    from orchestrator.sweep.storage import check_plan

    grid = write_grid(tmp_path / "g.csv", [{"encoder": "resnet18", "epochs": 2, **TINY}])
    plans = plan_sweep(SweepConfig(grid=str(grid), checkpoint_every=2), load_grid(str(grid)), use_gpus=False)
    check_plan(str(tmp_path / "sweeps" / "g"), "orch-sweep.json", plans, "g")
    res = CliRunner().invoke(main, ["sweep", "--grid", str(grid), "--data", str(prepared), "--storage",
                                    str(tmp_path / "sweeps"), "--no-tracking", "--checkpoint-every", "1"])
    assert res.exit_code == 1 and "was started with --checkpoint-every 2, not 1" in res.output, res.output
    import ray

    assert not ray.is_initialized()
