"""``SweepProgress`` where no terminal is attached: one plain, flushed line per trial event (no Ray cluster: the
Tune callback methods are driven directly with real, unstarted Tune trials)."""

from __future__ import annotations

import io
from unittest import mock

from click.testing import CliRunner
from ray.tune.experiment import Trial
from rich.console import Console

from orchestrator.cli import main
from orchestrator.config import SweepConfig
from orchestrator.grids import load_grid
from orchestrator.sweep.plan import plan_sweep
from orchestrator.sweep.progress import SweepProgress
from tests.sweep.conftest import done_outcome

A, B, C = "resnet18-adam-lr1e-03", "resnet18-sgd-lr1e-02", "resnet18-rmsprop-lr1e-04"


def _plans():
    return plan_sweep(SweepConfig(grid="smoke"), load_grid("smoke"), use_gpus=False)  # 4 trials, 2 epochs each


def _trial(trial_id: str) -> Trial:
    return Trial("run_trial", config={"trial": {"trial_id": trial_id}}, stub=True)


def _events(progress: SweepProgress) -> None:
    """A finishes, B diverges in its second epoch, C fails for good."""
    a, b, c = _trial(A), _trial(B), _trial(C)
    progress.start()
    for t in (a, b, c):
        progress.on_trial_start(0, [], t)
    progress.on_trial_result(0, [], a, {"epoch": 1, "status": "running", "dice_volume_mean": 0.61234,
                                        "img_per_s": 142.4, "final": False})
    progress.on_trial_result(0, [], b, {"epoch": 1, "status": "running", "dice_volume_mean": 0.1, "img_per_s": 9.87,
                                        "final": False})
    progress.on_trial_result(0, [], a, {"epoch": 2, "status": "running", "dice_volume_mean": 0.65, "img_per_s": 150.0,
                                        "final": False})
    progress.on_trial_result(0, [], b, {"epoch": 2, "status": "diverged", "final": False})
    progress.on_trial_result(0, [], a, {"final": True, "status": "finished", "epochs_completed": 2,
                                        "val_dice_volume_mean": 0.65, "test_dice_volume_mean": 0.7013})
    progress.on_trial_complete(0, [], a)
    progress.on_trial_result(0, [], b, {"final": True, "status": "diverged", "epochs_completed": 1})
    progress.on_trial_complete(0, [], b)
    progress.on_trial_recover(0, [], c)
    progress.on_trial_restore(0, [], c)
    progress.on_trial_error(0, [], c)
    progress.stop()


def test_plain_mode_prints_one_line_per_trial_event():
    out = io.StringIO()
    progress = SweepProgress(_plans(), console=Console(file=out, width=60), title="sweep smoke")
    assert progress.plain  # a file is no terminal
    _events(progress)
    assert out.getvalue().splitlines() == [
        "sweep smoke: 4 trials",
        f"trial {A}: started",
        f"trial {B}: started",
        f"trial {C}: started",
        f"trial {A}: epoch 1/2 val dice_volume_mean 0.612 (142 img/s)",
        f"trial {B}: epoch 1/2 val dice_volume_mean 0.100 (9.9 img/s)",
        f"trial {A}: epoch 2/2 val dice_volume_mean 0.650 (150 img/s)",
        f"trial {B}: epoch 2/2 diverged (loss not finite)",
        f"trial {A}: finished, test dice_volume_mean 0.701",
        f"trial {B}: diverged in epoch 2/2",
        f"trial {C}: failed, retrying (see its trial directory)",
        f"trial {C}: restored from its checkpoint",
        f"trial {C}: error, see its trial directory",
    ]  # lines longer than the console's 60 columns stay whole
    assert {s.trial_id: s.status for s in progress.states.values()} == {
        "resnet34-adam-lr1e-04": "pending", A: "finished", B: "diverged", C: "error"}


def test_plain_lines_reach_the_file_at_once(tmp_path):
    log = tmp_path / "sweep.log"
    with log.open("w") as f:  # a buffered file, as under `nohup ... > log`
        progress = SweepProgress(_plans(), console=Console(file=f), title="sweep smoke")
        progress.on_trial_start(0, [], _trial(A))
        assert log.read_text() == f"trial {A}: started\n"  # read while the writer still holds the file open


def test_a_terminal_gets_the_table_not_lines():
    out = io.StringIO()
    progress = SweepProgress(_plans(), console=Console(file=out, force_terminal=True), title="sweep smoke")
    assert not progress.plain
    progress.on_trial_start(0, [], _trial(A))
    progress.on_trial_result(0, [], _trial(A), {"epoch": 1, "status": "running", "dice_volume_mean": 0.5,
                                                "img_per_s": 1e-5, "final": False})
    assert out.getvalue() == ""  # no live display was started, and no plain line written
    table = io.StringIO()
    Console(file=table, width=200).print(progress.render())
    row = next(line for line in table.getvalue().splitlines() if A in line)
    assert "running" in row and "0.500" in row and "1.0e-05" in row  # a very slow trial's img/s: short, not 0.0


def test_orch_sweep_without_a_terminal_hands_the_sweep_a_plain_console(tmp_path, monkeypatch):
    monkeypatch.delenv("ORCH_PLAIN", raising=False)  # CliRunner's stdout is no terminal: that alone decides,
    monkeypatch.setenv("FORCE_COLOR", "1")  # even where CI asks for colours (rich alone would then go live)
    # only the run itself is mocked
    with mock.patch("orchestrator.sweep.runner.run_sweep", return_value=done_outcome()) as run:
        run.return_value.summary.return_value = "sweep smoke: done"
        res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--data", str(tmp_path), "--no-tracking"])
    assert res.exit_code == 0, res.output
    console = run.call_args.kwargs["console"]
    assert not console.is_terminal and SweepProgress(_plans(), console=console).plain


def test_a_trial_the_scheduler_stopped_shows_as_stopped_early():
    out = io.StringIO()
    progress = SweepProgress(_plans(), console=Console(file=out, width=60), title="sweep smoke")
    a = _trial(A)
    progress.on_trial_start(0, [], a)
    # Tune marks the epoch result its scheduler stopped the trial at `done`; no final result follows.
    progress.on_trial_result(0, [], a, {"epoch": 1, "status": "running", "dice_volume_mean": 0.25, "img_per_s": 50.0,
                                        "final": False, "done": True, "val_dice_volume_mean": 0.25})
    progress.on_trial_complete(0, [], a)
    assert out.getvalue().splitlines()[-2:] == [
        f"trial {A}: epoch 1/2 val dice_volume_mean 0.250 (50.0 img/s)",
        f"trial {A}: stopped early by the scheduler after epoch 1/2 (best val dice_volume_mean 0.250)"]
    assert progress.states[A].status == "stopped_early" and progress.states[A].ended is not None
    table = io.StringIO()
    Console(file=table, width=200).print(progress.render())
    assert "1/4 trials done" in table.getvalue() and "stopped_early" in table.getvalue()


def test_a_one_trial_sweep_says_trial():
    out = io.StringIO()
    progress = SweepProgress(_plans()[:1], console=Console(file=out, width=60), title="sweep one")
    progress.start()
    progress.stop()
    assert out.getvalue().splitlines()[0] == "sweep one: 1 trial"
