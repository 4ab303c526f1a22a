"""Live progress of a sweep: a Tune callback on the driver that keeps a rich table of the trials on a terminal,
and prints one plain line per trial event anywhere else (a log file, ``ray job submit``, ``nohup``, CI)::

    trial resnet18-adam-lr1e-03: started
    trial resnet18-adam-lr1e-03: epoch 3/10 val dice_volume_mean 0.612 (142 img/s)
    trial resnet18-adam-lr1e-03: finished, test dice_volume_mean 0.701
    trial resnet18-sgd-lr1e-04: stopped early by the scheduler after epoch 3/10 (best val dice_volume_mean 0.412)

Table columns: trial, status, epoch, best validation ``dice_volume_mean``, images/s of the last epoch, elapsed time.
The callback also keeps per-trial timings (driver start, first report, the trial's own clock) that the
benchmarks use to measure Ray's overhead per trial.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.fmt import count_noun, fmt_value
from orchestrator.report.screening import STOPPED_EARLY
from orchestrator.results_schema import is_number
from orchestrator.sweep.plan import TrialPlan

log = logging.getLogger(__name__)

_STYLE = {"finished": "green", "diverged": "yellow", "error": "red", "running": "cyan", "pending": "dim",
          STOPPED_EARLY: "magenta"}
_ENDED = ("finished", "diverged", STOPPED_EARLY, "error")


@dataclass
class TrialState:
    trial_id: str
    epochs: int
    status: str = "pending"
    epoch: int = 0
    best_dice: float | None = None
    test_dice: float | None = None
    img_per_s: float | None = None
    started: float | None = None  # driver clock: Tune started (or restored) the trial
    first_report: float | None = None  # driver clock: first epoch report arrived
    ended: float | None = None
    trial_clock: dict[str, float] = field(default_factory=dict)  # t_trial_start / t_fit_start (trial's clock)


def _rate(v: float | None) -> str:
    return fmt_value(v, 0 if v is not None and abs(v) >= 100 else 1)


class SweepProgress(Callback):
    """Tune callback showing the trials on ``console``: a live table, or with ``plain`` one line per trial event
    (start, epoch, end, error), flushed at once. Nothing is shown when ``console`` is None.

    ``plain`` defaults to ``not console.is_terminal``: the CLI decides once (``orchestrator.cli.common.
    interactive``, ``ORCH_PLAIN=1``) and hands in a console made accordingly."""

    def __init__(self, plans: list[TrialPlan], console: Console | None = None, title: str = "sweep",
                 plain: bool | None = None):
        self.states = {p.trial_id: TrialState(p.trial_id, p.config.epochs) for p in plans}
        self.console = console
        self.title = title
        self.plain = console is not None and (not console.is_terminal if plain is None else plain)
        self._live: Live | None = None
        self._t0 = time.time()

    # Tune pickles its run config (callbacks included) into the experiment directory: keep only plain state.
    def __getstate__(self) -> dict[str, Any]:
        return {"states": {}, "console": None, "title": self.title, "plain": False, "_live": None, "_t0": 0.0}

    def seed(self, rows: Any, rerun: tuple[str, ...] = ()) -> int:
        """Start a resumed sweep's table from what its trials had done (``rows``: results.csv rows of the restored
        experiment, ``orchestrator.sweep.rows.collect_rows``): ended trials keep their status, epoch and scores,
        unfinished ones show the epoch they continue from; trials of a status in ``rerun`` (errored ones under
        ``--restart-errored``) start over as pending. Returns how many trials are already done."""
        for row in rows.to_dict("records") if len(rows) else []:
            s = self.states.get(row.get("trial_id"))
            if s is None:
                continue
            status = str(row.get("status") or "pending")
            s.status = status if status in _ENDED and status not in rerun else "pending"
            if status not in rerun and is_number(row.get("epochs_completed")):
                s.epoch = int(row["epochs_completed"])
            if s.status in _ENDED and is_number(row.get("val_dice_volume_mean")):
                s.best_dice = float(row["val_dice_volume_mean"])
            if s.status in _ENDED and is_number(row.get("test_dice_volume_mean")):
                s.test_dice = float(row["test_dice_volume_mean"])
        return self.done()

    def done(self) -> int:
        """How many trials have ended (finished, diverged, stopped early or errored)."""
        return sum(s.status in _ENDED for s in self.states.values())

    def _say(self, line: str) -> None:
        """One plain line (plain mode only); rich's print flushes the stream after each line."""
        if self.plain:
            self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def start(self) -> None:
        if self.plain:
            done = self.done()
            self._say(f"{self.title}: {count_noun(len(self.states), 'trial')}"
                      + (f", {done} done already" if done else ""))
        elif self.console is not None and self._live is None:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.stop()
            self._live = None
            if not self.console.is_terminal:  # Live's last frame ends without a newline when output is a file
                self.console.line()

    def _state(self, trial) -> TrialState | None:
        tid = trial.config.get("trial", {}).get("trial_id")
        return self.states.get(tid)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._started(trial, "started")

    def on_trial_restore(self, iteration, trials, trial, **info) -> None:
        self._started(trial, "restored from its checkpoint")

    def _started(self, trial, how: str) -> None:
        s = self._state(trial)
        if s is not None:
            s.status, s.started = "running", time.time()
            log.info("trial %s %s", s.trial_id, how)
            self._say(f"trial {s.trial_id}: {how}")
        self._refresh()

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        s = self._state(trial)
        if s is not None:
            self._say(f"trial {s.trial_id}: failed, retrying (see {getattr(trial, 'path', 'its trial directory')})")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        s = self._state(trial)
        if s is None:
            return
        if s.first_report is None:
            s.first_report = time.time()
            s.trial_clock = {k: float(result[k]) for k in ("t_trial_start", "t_fit_start") if k in result}
        if result.get("final"):
            s.status = str(result.get("status", "finished"))
            # A trial that diverged in epoch 3 completed 2: keep the epoch it reached.
            s.epoch = max(s.epoch, int(result.get("epochs_completed", s.epoch)))
            if is_number(result.get("val_dice_volume_mean")):
                s.best_dice = float(result["val_dice_volume_mean"])
            if is_number(result.get("test_dice_volume_mean")):
                s.test_dice = float(result["test_dice_volume_mean"])
        else:
            s.epoch = int(result.get("epoch", s.epoch))
            s.status = "diverged" if result.get("status") == "diverged" else "running"
            if result.get("done") and s.status == "running":  # Tune marks the result its scheduler stopped it at
                s.status = STOPPED_EARLY
            dice = result.get("dice_volume_mean")
            if dice is not None and (s.best_dice is None or dice > s.best_dice):
                s.best_dice = float(dice)
            if result.get("img_per_s") is not None:
                s.img_per_s = float(result["img_per_s"])
            if s.status == "diverged":
                self._say(f"trial {s.trial_id}: epoch {s.epoch}/{s.epochs} diverged (loss not finite)")
            else:
                self._say(f"trial {s.trial_id}: epoch {s.epoch}/{s.epochs} val dice_volume_mean "
                          f"{fmt_value(dice)} ({_rate(result.get('img_per_s'))} img/s)")
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        s = self._state(trial)
        if s is not None:
            s.ended = time.time()
            if s.status in ("running", "pending"):
                s.status = "finished"
            if s.status == "diverged":
                self._say(f"trial {s.trial_id}: diverged in epoch {s.epoch}/{s.epochs}")
            elif s.status == STOPPED_EARLY:
                self._say(f"trial {s.trial_id}: stopped early by the scheduler after epoch {s.epoch}/{s.epochs} "
                          f"(best val dice_volume_mean {fmt_value(s.best_dice)})")
            elif s.test_dice is not None:
                self._say(f"trial {s.trial_id}: {s.status}, test dice_volume_mean {fmt_value(s.test_dice)}")
            else:
                self._say(f"trial {s.trial_id}: {s.status}")
        self._refresh()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        s = self._state(trial)
        if s is not None:
            s.status, s.ended = "error", time.time()
            where = getattr(trial, "path", "its trial directory")
            log.warning("trial %s failed: see %s", s.trial_id, where)
            self._say(f"trial {s.trial_id}: error, see {where}")
        self._refresh()

    def render(self) -> Table:
        elapsed = time.time() - self._t0
        done = self.done()
        table = Table(title=f"{self.title}: {done}/{len(self.states)} trials done, {elapsed:.0f}s",
                      title_justify="left", expand=False)
        for col, just in (("trial", "left"), ("status", "left"), ("epoch", "right"), ("best val dice", "right"),
                          ("img/s", "right"), ("time", "right")):
            table.add_column(col, justify=just)
        now = time.time()
        for s in self.states.values():
            t = ((s.ended or now) - s.started) if s.started else None
            table.add_row(
                s.trial_id,
                f"[{_STYLE.get(s.status, '')}]{s.status}[/]",
                f"{s.epoch}/{s.epochs}",
                fmt_value(s.best_dice),
                fmt_value(s.img_per_s, 1),
                f"{t:.0f}s" if t is not None else "-",
            )
        return table
