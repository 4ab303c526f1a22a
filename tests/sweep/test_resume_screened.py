"""Resuming a sweep: the plan file records the scheduler (a rerun with other screening options is refused), the
restored ASHA scheduler gets back the rung records Tune does not save, trials the scheduler stopped stay stopped and
lose their checkpoints, and the live table starts from what was already done."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from rich.console import Console

from orchestrator.config import ConfigError, SweepConfig
from orchestrator.grids import load_grid
from orchestrator.sweep import storage as st
from orchestrator.sweep.plan import plan_sweep
from orchestrator.sweep.schedulers import SchedulerConfig, build_scheduler, replay_rungs
from tests.sweep.conftest import TINY, write_grid
from tests.sweep.test_schedulers import ASHA, CURVES, ORDER, _history


def _plans():
    return plan_sweep(SweepConfig(grid="smoke"), load_grid("smoke"), use_gpus=False)  # 4 trials, 2 epochs each


def test_the_plan_file_records_the_scheduler_and_a_rerun_must_match(tmp_path):
    exp, plans = str(tmp_path / "smoke"), _plans()
    asha = SchedulerConfig("asha", reduction_factor=2, metric="val_loss")
    st.check_plan(exp, "orch-sweep.json", plans, "smoke", asha.record(8))
    recorded = json.loads((tmp_path / "smoke" / "orch-sweep.json").read_text())["scheduler"]
    assert recorded == {"scheduler": "asha", "grace_period": 2, "reduction_factor": 2, "asha_metric": "val_loss"}
    # The default grace period of 8 epochs is 2: asking for it explicitly is the same sweep.
    st.check_plan(exp, "orch-sweep.json", plans, "smoke", SchedulerConfig("asha", 2, 2, "val_loss").record(8))
    for other, flag in ((SchedulerConfig("asha", reduction_factor=3, metric="val_loss"), "--reduction-factor 3"),
                        (SchedulerConfig("asha", grace_period=1, reduction_factor=2, metric="val_loss"),
                         "--grace-period 1"),
                        (SchedulerConfig(), "--scheduler fifo")):
        with pytest.raises(ConfigError, match=rf"started with --scheduler asha --grace-period 2 --reduction-factor 2 "
                                              rf"--asha-metric val_loss, not .*{flag}.*original scheduler options"):
            st.check_plan(exp, "orch-sweep.json", plans, "smoke", other.record(8))
    fifo = str(tmp_path / "fifo")
    st.check_plan(fifo, "orch-sweep.json", plans, "smoke", SchedulerConfig().record(None))
    with pytest.raises(ConfigError, match="started with --scheduler fifo, not --scheduler asha"):
        st.check_plan(fifo, "orch-sweep.json", plans, "smoke", asha.record(8))


def test_a_plan_file_from_before_gets_the_scheduler_recorded(tmp_path):
    exp, plans = str(tmp_path / "old"), _plans()
    st.check_plan(exp, "orch-sweep.json", plans, "smoke")  # an older orch recorded no scheduler
    assert "scheduler" not in json.loads((tmp_path / "old" / "orch-sweep.json").read_text())
    st.check_plan(exp, "orch-sweep.json", plans, "smoke", SchedulerConfig().record(None))  # accepted, and recorded
    assert json.loads((tmp_path / "old" / "orch-sweep.json").read_text())["scheduler"] == {"scheduler": "fifo"}
    with pytest.raises(ConfigError, match="--scheduler fifo"):
        st.check_plan(exp, "orch-sweep.json", plans, "smoke", SchedulerConfig("asha").record(8))


def _run_dir(root, tid: str, files: tuple[str, ...]) -> str:
    d = root / tid / "checkpoint_000002"
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_bytes(b"w" * 100)
    return str(d)


def test_stopped_trials_lose_their_checkpoints_unfinished_ones_keep_them(tmp_path):
    df = pd.DataFrame([
        {"trial_id": "a", "status": "finished", "test_dice_volume_mean": 0.7,
         "run_dir": _run_dir(tmp_path, "a", ("best.pt", "result.json"))},
        {"trial_id": "s", "status": "stopped_early", "test_dice_volume_mean": None,
         "run_dir": _run_dir(tmp_path, "s", ("best.pt", "last.pt", "history.csv"))},
        {"trial_id": "u", "status": "unfinished", "test_dice_volume_mean": None,
         "run_dir": _run_dir(tmp_path, "u", ("best.pt", "last.pt"))}])
    kept, pruned = st.keep_checkpoints(df, None, str(tmp_path))  # keep all best.pt: a stopped trial's last.pt goes
    assert sorted(p.relative_to(tmp_path).parts[0] + "/" + p.name for p in tmp_path.rglob("*.pt")) == [
        "a/best.pt", "s/best.pt", "u/best.pt", "u/last.pt"]
    assert set(kept) == {"a", "s"} and pruned == {}
    kept, pruned = st.keep_checkpoints(df, 1, str(tmp_path))  # top 1: the stopped trial's best.pt goes too
    assert kept == {"a": str(tmp_path / "a/checkpoint_000002/best.pt")} and "top 1" in pruned["s"]
    assert sorted(p.parent.parent.name for p in tmp_path.rglob("*.pt")) == ["a", "u", "u"]
    assert (tmp_path / "s/checkpoint_000002/history.csv").is_file()  # the rest of the run directory stays


def test_replayed_rungs_decide_like_an_uninterrupted_sweep():
    """Tune's ASHA fed the first 6 reports live, then 'interrupted': a fresh scheduler given the same reports by
    ``replay_rungs`` holds the same rung records and takes the same decisions on the reports that follow."""
    from ray.tune.schedulers import TrialScheduler

    live, restored = build_scheduler(ASHA, 4), build_scheduler(ASHA, 4)
    trials = {t: SimpleNamespace(trial_id=f"tune_{t}") for t in CURVES}
    for t in trials.values():
        live.on_trial_add(None, t)
    before, after = ORDER[:6], ORDER[6:]  # A finished, B stopped at rung 1, C at rung 1: the 'kill' comes here
    for t, e in before:
        live.on_trial_result(None, trials[t], {"epoch": e, "val_dice_volume_mean": CURVES[t][e - 1]})
    shuffled = _history(CURVES, before).iloc[::-1]  # the records do not depend on the order trials arrived in
    assert replay_rungs(restored, shuffled, {t: f"tune_{t}" for t in CURVES}) == 3
    assert [r for _, r in restored._brackets[0]._rungs] == [r for _, r in live._brackets[0]._rungs]
    fresh = build_scheduler(ASHA, 4)  # what Tune restored before: empty rungs

    def decide(sched):
        for t in trials.values():
            sched.on_trial_add(None, t)  # Tune adds the restored trials again
        return [sched.on_trial_result(None, trials[t], {"epoch": e, "val_dice_volume_mean": CURVES[t][e - 1]})
                for t, e in after]

    decided = decide(restored)
    assert decided == decide(live) and decided.count(TrialScheduler.STOP) == 1  # C at rung 2, behind A
    assert TrialScheduler.STOP not in decide(fresh)  # empty rungs: C would have trained to the end


def test_the_live_table_of_a_resumed_sweep_starts_from_what_was_done():
    from orchestrator.sweep.progress import SweepProgress

    plans = _plans()
    ids = [p.trial_id for p in plans]
    rows = pd.DataFrame([
        {"trial_id": ids[0], "status": "finished", "epochs_completed": 2, "val_dice_volume_mean": 0.61,
         "test_dice_volume_mean": 0.7},
        {"trial_id": ids[1], "status": "stopped_early", "epochs_completed": 1, "val_dice_volume_mean": 0.2},
        {"trial_id": ids[2], "status": "unfinished", "epochs_completed": 1},
        {"trial_id": ids[3], "status": "error", "epochs_completed": 0}])
    out = io.StringIO()
    progress = SweepProgress(plans, console=Console(file=out, width=120), title="sweep smoke", plain=True)
    assert progress.seed(rows) == 3
    states = {t: (s.status, s.epoch, s.best_dice, s.test_dice) for t, s in progress.states.items()}
    assert states == {ids[0]: ("finished", 2, 0.61, 0.7), ids[1]: ("stopped_early", 1, 0.2, None),
                      ids[2]: ("pending", 1, None, None), ids[3]: ("error", 0, None, None)}
    assert progress.render().title.startswith("sweep smoke: 3/4 trials done")
    progress.start()
    assert out.getvalue().splitlines() == ["sweep smoke: 4 trials, 3 done already"]
    again = SweepProgress(plans, title="sweep smoke")
    assert again.seed(rows, rerun=("error",)) == 2 and again.states[ids[3]].status == "pending"  # --restart-errored
    assert SweepProgress(plans).seed(rows.iloc[:0]) == 0


def _orch(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "sweep", *args]


def _kill_when(driver: subprocess.Popen, line_part: str, seen: list[str], deadline_s: float = 240) -> None:
    """Read the driver's plain lines until one contains ``line_part``, then SIGKILL it (its whole session)."""
    deadline = time.time() + deadline_s
    for line in driver.stdout:
        seen.append(line.rstrip())
        if line_part in line or time.time() > deadline:
            break
    assert driver.poll() is None, "the sweep ended before it could be killed:\n" + "\n".join(seen)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(30)


@pytest.mark.slow
def test_a_screened_sweep_killed_and_rerun_keeps_its_rungs_and_its_stopped_trials(prepared, tmp_path):
    """A real screened sweep, one trial at a time, ASHA on val_loss at epochs 1 and 2 (grace 1, reduction factor 2):
    ``good`` and ``flat`` (SGD at lr 1e-9) run to the end; the driver is SIGKILLed as soon as ``slow`` (lr 1e-10,
    60 steps an epoch: its batch-norm statistics, all that moves, leave it with a val_loss of 1.76 at epoch 1,
    above the 1.68 and 1.66 of the other two; training is seeded, so these figures repeat) starts. The rerun must
    compare ``slow`` with the two trials that reached epoch 1 before the kill, and stop it, not let it through as
    the first arrival at an empty rung."""
    good, flat, slow = "resnet18-adam-lr1e-03", "resnet18-sgd-lr1e-09", "resnet18-sgd-lr1e-10"
    grid = write_grid(tmp_path / "screen.csv", [
        {"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "epochs": 3, **{**TINY, "max_steps": 8}},
        {"encoder": "resnet18", "optimizer": "sgd", "lr": 1e-9, "epochs": 3, **TINY},
        {"encoder": "resnet18", "optimizer": "sgd", "lr": 1e-10, "epochs": 3, **{**TINY, "max_steps": 60}},
    ])
    # --no-tracking: what is tested here is Tune's and ASHA's state, not MLflow's.
    args = ["--no-tracking", "--grid", str(grid), "--data", str(prepared), "--storage", str(tmp_path / "sweeps"),
            "--max-concurrent", "1", "--scheduler", "asha", "--grace-period", "1", "--reduction-factor", "2",
            "--asha-metric", "val_loss"]
    env = os.environ | {"ORCH_PLAIN": "1"}
    exp = tmp_path / "sweeps" / "screen"
    seen: list[str] = []
    driver = subprocess.Popen(_orch(args), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, start_new_session=True)
    try:
        _kill_when(driver, f"trial {slow}: started", seen)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    for tid in (good, flat):
        assert [s for s in seen if s.startswith(f"trial {tid}: finished")], "\n".join(seen)
    assert not list((exp / slow).glob("checkpoint_*")), "the kill came after slow reached its first rung"

    rerun = subprocess.run(_orch(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    lines = rerun.stdout.splitlines()
    assert lines[0] == "sweep screen: 3 trials, 2 done already", lines[:3]  # the table starts from what was done
    # Neither trains again (a trial whose end the kill beat Tune's state save to is restored from its final
    # checkpoint, whose fit returns the stored result at once: no epoch).
    assert not [s for s in lines if s.startswith((f"trial {good}: epoch", f"trial {flat}: epoch"))], lines
    assert f"trial {slow}: stopped early by the scheduler after epoch 1/3" in rerun.stdout, rerun.stdout

    df = pd.read_csv(exp / "results.csv").set_index("trial_id")
    assert set(df.loc[[good, flat], "status"]) == {"finished"} and set(df.loc[[good, flat], "epochs_completed"]) == {3}
    assert (df.loc[slow, "status"], df.loc[slow, "stopped_epoch"]) == ("stopped_early", 1)
    history = pd.read_csv(exp / "screening_history.csv")  # the epochs before the kill are still there
    assert sorted(map(tuple, history[["trial_id", "epoch"]].values.tolist())) == [
        (good, 1), (good, 2), (good, 3), (flat, 1), (flat, 2), (flat, 3), (slow, 1)]
    rungs = pd.read_csv(exp / "screening_rungs.csv").set_index(["rung", "trial_id"])
    assert rungs.loc[(1, slow), "decision"] == "stopped" and rungs.loc[(1, slow), "arrival"] == 3
    assert not list((exp / slow).rglob("last.pt")) and list((exp / slow).rglob("config.json"))  # never resumed

    other = subprocess.run(_orch([*args[:-3], "3", *args[-2:]]), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)  # --reduction-factor 3
    assert other.returncode != 0
    assert ("was started with --scheduler asha --grace-period 1 --reduction-factor 2 --asha-metric val_loss, not "
            "--scheduler asha --grace-period 1 --reduction-factor 3") in other.stdout + other.stderr

    again = subprocess.run(_orch(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert again.stdout.splitlines()[0] == "sweep screen: 3 trials, 3 done already"
    assert f"trial {slow}:" not in again.stdout  # stopped stays stopped: never resumed, never retrained
    assert "(2 finished, 1 stopped_early)" in again.stdout
    assert pd.read_csv(exp / "results.csv").set_index("trial_id").loc[slow, "stopped_epoch"] == 1
