"""The report of an ASHA screening (``orch sweep --scheduler asha``): what the scheduler decided at each rung, the
compute it saved, and, against a full-grid sweep of the same grid, whether the full grid's winner survived.

    screening.md            the answer, in words, then the rung decisions and the survivors
    screening_rungs.csv     one row per (rung, trial that reached it): its metric, the cut-off it met, the decision
    screening_history.csv   the per-epoch metric of every trial (what the decisions were made on; the sweep writes it)
    plot_screening.png      per trial, the metric over epochs with the rung cut-offs; stopped trials greyed

A stopped trial is a result of the screening, not a failure: ``status="stopped_early"`` in results.csv with the epoch
it reached in ``stopped_epoch``. Reads result files only (the rungs come from the sweep, ``orchestrator.sweep.
schedulers``), so ``orch report SWEEP --against FULL_SWEEP`` can rewrite it later.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.errors import ResultsError
from orchestrator.files import atomic_write, atomic_write_text
from orchestrator.fmt import fmt_value
from orchestrator.results_schema import RANK_BY, top_trials

STOPPED_EARLY = "stopped_early"  # results.csv status of a trial the scheduler stopped
STOPPED_EPOCH = "stopped_epoch"  # results.csv column: the epoch it stopped at (empty for every other trial)
SCREENING_MD = "screening.md"
RUNGS_CSV = "screening_rungs.csv"
HISTORY_CSV = "screening_history.csv"
PLOT = "plot_screening.png"
RUNG_COLUMNS = ("rung", "trial_id", "metric", "value", "cutoff", "decision", "arrival")
HISTORY_COLUMNS = ("trial_id", "epoch", "metric", "value", "t_report")


@dataclass(frozen=True)
class Saved:
    """Epochs the screening trained, against the epochs of the full grid (every trial to its last epoch)."""

    epochs_run: int
    epochs_full: int

    @property
    def fraction(self) -> float:
        return self.epochs_run / self.epochs_full if self.epochs_full else math.nan


@dataclass(frozen=True)
class WinnerCheck:
    """The full grid's winner (best test dice_volume_mean) as the screening treated it."""

    winner: str
    score: float  # its test dice_volume_mean in the full grid
    status: str | None  # its status in the screening (None: not in it)
    stopped_epoch: int | None
    rank: int | None  # 1-based, among the screening's survivors by their own test dice_volume_mean
    survivors: int

    @property
    def survived(self) -> bool:
        return self.status == "finished"


def _trial_epochs(row: pd.Series) -> int:
    """Epochs one trial trained: a stopped trial its ``stopped_epoch``, a diverged one also the epoch that
    diverged (``epochs_completed`` counts only the finite ones)."""
    done = pd.to_numeric(row.get("epochs_completed"), errors="coerce")
    done = 0 if pd.isna(done) else int(done)
    if row.get("status") == STOPPED_EARLY and pd.notna(row.get(STOPPED_EPOCH)):
        return int(row[STOPPED_EPOCH])
    return done + (1 if row.get("status") == "diverged" else 0)


def compute_saved(results: pd.DataFrame, epochs: int) -> Saved:
    """Epochs run by the trials of ``results`` / the epochs of the full grid (``epochs`` per trial)."""
    run = sum(_trial_epochs(r) for _, r in results.iterrows())
    return Saved(epochs_run=int(run), epochs_full=int(epochs) * len(results))


def compare_winner(screen: pd.DataFrame, full: pd.DataFrame) -> WinnerCheck | None:
    """Did the full grid's winner survive the screening (run to its end, not stopped)? None when the full grid has
    no finished trial with a test score. Survivors are ranked by their own test score, as in the full grid."""
    best = top_trials(full, 1)
    if best.empty:
        return None
    winner = str(best["trial_id"].iloc[0])
    ranked = list(top_trials(screen, len(screen))["trial_id"].astype(str))
    mine = screen[screen["trial_id"].astype(str) == winner]
    status = str(mine["status"].iloc[0]) if len(mine) else None
    stopped = mine[STOPPED_EPOCH].iloc[0] if len(mine) and STOPPED_EPOCH in mine.columns else None
    return WinnerCheck(winner=winner, score=float(best[RANK_BY].iloc[0]), status=status,
                       stopped_epoch=int(stopped) if stopped is not None and pd.notna(stopped) else None,
                       rank=ranked.index(winner) + 1 if winner in ranked else None, survivors=len(ranked))


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _winner_clause(check: WinnerCheck | None) -> str:
    if check is None:
        return "the full-grid sweep has no tested trial to compare with"
    who = f"the full grid's winner {check.winner}"
    if check.survived and check.rank is not None:
        return f"{who} survived (ranked {_ordinal(check.rank)} among {check.survivors} survivors)"
    if check.survived:
        return f"{who} survived (no test score here)"
    if check.status is None:
        return f"{who} is not in this sweep"
    if check.status == STOPPED_EARLY:
        at = f" at epoch {check.stopped_epoch}" if check.stopped_epoch is not None else ""
        return f"{who} did NOT survive: ASHA stopped it{at}"
    return f"{who} did NOT survive: it ended {check.status}"


def _headline(results: pd.DataFrame, epochs: int, full: pd.DataFrame | None) -> str:
    saved = compute_saved(results, epochs)
    counts = results["status"].value_counts() if len(results) else pd.Series(dtype=int)
    pct = f"{100 * saved.fraction:.0f}" if saved.epochs_full else "-"
    line = (f"ASHA ran {pct} % of the full grid's epochs ({saved.epochs_run} of {saved.epochs_full}); "
            f"{int(counts.get('finished', 0))} of {len(results)} trials ran to the end; ")
    if full is None:
        line += "no full-grid sweep to compare with (`orch report SWEEP --against FULL_SWEEP` says whether its " \
                "winner survived)"
    else:
        line += _winner_clause(compare_winner(results, full))
    others = ", ".join(f"{int(n)} {k.replace('_', ' ')}" for k, n in counts.items() if k != "finished")
    return line + "." + (f" The others: {others}." if others else "")


def _rung_table(rungs: pd.DataFrame) -> list[str]:
    """One line per rung: how many trials reached it, continued and were stopped, the cut-offs applied."""
    if rungs.empty:
        return ["No trial reached a rung: ASHA made no decision."]
    metric = str(rungs["metric"].iloc[0])
    out = [f"| rung (epoch) | reached | continued | stopped | cut-off on {metric} (first arrivals pass) |",
           "|---|---|---|---|---|"]
    for rung, group in rungs.groupby("rung", sort=True):
        cut = pd.to_numeric(group["cutoff"], errors="coerce").dropna()
        span = "-" if cut.empty else f"{fmt_value(cut.min())} to {fmt_value(cut.max())}"
        stopped = int((group["decision"] == "stopped").sum())
        out.append(f"| {int(rung)} | {len(group)} | {len(group) - stopped} | {stopped} | {span} |")
    return out


def _stopped_table(rungs: pd.DataFrame) -> list[str]:
    stopped = rungs[rungs["decision"] == "stopped"] if len(rungs) else rungs
    if stopped.empty:
        return ["No trial was stopped."]
    out = ["| trial | stopped at epoch | value there | cut-off it missed |", "|---|---|---|---|"]
    for _, r in stopped.sort_values(["rung", "arrival"], kind="stable").iterrows():
        out.append(f"| {r['trial_id']} | {int(r['rung'])} | {fmt_value(r['value'])} | {fmt_value(r['cutoff'])} |")
    return out


def _survivor_table(results: pd.DataFrame) -> list[str]:
    ranked = top_trials(results, len(results))
    if ranked.empty:
        return ["No trial ran to the end with a test score."]
    out = ["| rank | trial | test dice_volume_mean |", "|---|---|---|"]
    for i, (_, r) in enumerate(ranked.iterrows(), 1):
        out.append(f"| {i} | {r['trial_id']} | {fmt_value(r[RANK_BY])} |")
    return out


def screening_markdown(results: pd.DataFrame, rungs: pd.DataFrame, epochs: int,
                       full: pd.DataFrame | None = None) -> str:
    """The screening as Markdown: the answer first (compute used, trials that ran to the end, the full grid's
    winner), then the rung decisions, the stopped trials and the survivors ranked by test dice_volume_mean."""
    lines = ["## ASHA screening", "", _headline(results, epochs, full), "", "### Rung decisions", "",
             *_rung_table(rungs), "", "### Stopped trials", "", *_stopped_table(rungs), "",
             "### Survivors by test dice_volume_mean", "", *_survivor_table(results)]
    return "\n".join(lines) + "\n"


def write_screening(results: pd.DataFrame, out_dir: str | os.PathLike, rungs: pd.DataFrame, epochs: int,
                    full_results: pd.DataFrame | None = None, histories: pd.DataFrame | None = None,
                    plots: bool = True) -> dict[str, Path]:
    """``screening.md`` and ``screening_rungs.csv`` into ``out_dir``, and with ``histories`` (the per-epoch metric
    of every trial) ``plot_screening.png``; returns the files by key."""
    out = Path(out_dir)
    paths = {"screening": out / SCREENING_MD, "screening_rungs": out / RUNGS_CSV}
    atomic_write_text(paths["screening"], screening_markdown(results, rungs, epochs, full_results))
    frame = rungs.reindex(columns=list(RUNG_COLUMNS))
    atomic_write(paths["screening_rungs"], lambda tmp: frame.to_csv(tmp, index=False))
    if plots and histories is not None and len(histories):
        paths["screening_plot"] = plot_screening(results, rungs, histories, out / PLOT)
    return paths


def read_screening(sweep_dir: str | os.PathLike | None) -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    """The rung decisions and (when written) the per-epoch histories a screened sweep left; None for a sweep that
    was not screened (no ``screening_rungs.csv``)."""
    if sweep_dir is None or not (Path(sweep_dir) / RUNGS_CSV).is_file():
        return None
    rungs = pd.read_csv(Path(sweep_dir) / RUNGS_CSV)
    hist = Path(sweep_dir) / HISTORY_CSV
    return rungs, (pd.read_csv(hist) if hist.is_file() else None)


def report_screening(results: pd.DataFrame, sweep_dir: str | os.PathLike | None, out_dir: str | os.PathLike,
                     full_results: pd.DataFrame | None = None, plots: bool = True) -> dict[str, Path]:
    """``orch report SWEEP [--against FULL_SWEEP]``: rewrite the screening files of a screened sweep into
    ``out_dir`` ({} for a sweep that was not screened); ResultsError when ``full_results`` is given for one that was
    not (there is nothing to compare)."""
    found = read_screening(sweep_dir)
    if found is None:
        if full_results is not None:
            raise ResultsError(f"--against: the sweep in {sweep_dir} was not screened (no {RUNGS_CSV}): run it with "
                               "`orch sweep --scheduler asha`")
        return {}
    rungs, histories = found
    epochs = int(pd.to_numeric(results["epochs"], errors="coerce").max())
    return write_screening(results, out_dir, rungs, epochs, full_results, histories, plots)


def plot_screening(results: pd.DataFrame, rungs: pd.DataFrame, histories: pd.DataFrame, path: Path) -> Path:
    """Per trial, the screened metric over epochs: survivors in colour, stopped trials grey, each rung's cut-offs
    as red marks. matplotlib (Agg) is loaded here: a report of tables never needs it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stopped = set(results.loc[results["status"] == STOPPED_EARLY, "trial_id"].astype(str))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        curves = histories.sort_values("epoch").groupby("trial_id", sort=False)
        named = len(set(histories["trial_id"].astype(str)) - stopped) <= 12  # a legend of more is unreadable
        for tid, h in curves:
            grey = str(tid) in stopped
            ax.plot(h["epoch"], h["value"], color="0.7" if grey else None, lw=1 if grey else 1.6, alpha=0.8,
                    marker=".", label=str(tid) if named and not grey else None)
        cut = rungs.dropna(subset=["cutoff"]) if len(rungs) else rungs
        if len(cut):
            ax.scatter(cut["rung"], cut["cutoff"], marker="_", s=200, color="red", label="rung cut-off", zorder=3)
        for rung in sorted(set(rungs["rung"])) if len(rungs) else []:
            ax.axvline(rung, color="red", lw=0.6, ls=":")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel(str(histories["metric"].iloc[0]))
        ax.set_title(f"ASHA screening: {len(stopped)} of {len(results)} trials stopped (grey)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path
