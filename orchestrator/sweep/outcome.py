"""``SweepOutcome``: what ``run_sweep`` returns (the results table, where it lives, how it went) and the one-line
summary and failure message the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.fmt import count_noun, fmt_value
from orchestrator.grids import config_id
from orchestrator.results_schema import RANK_BY, RESULTS_CSV


@dataclass
class SweepOutcome:
    """What a sweep produced: the results table, where it lives, and how it went."""

    name: str
    sweep_dir: str  # <storage>/<name> (local path or URI)
    results_dir: Path  # local directory holding results.csv and the report
    results: pd.DataFrame
    counts: dict[str, int]
    elapsed_s: float
    restored: bool
    report: dict[str, Path] = field(default_factory=dict)  # the report beside results.csv: tables and plots
    timings: dict[str, Any] = field(default_factory=dict)  # trial id -> progress.TrialState (benchmarks)
    checkpoints: dict[str, str] = field(default_factory=dict)  # trial id -> its kept best.pt (path or URI)

    @property
    def results_csv(self) -> Path:
        return self.results_dir / RESULTS_CSV

    def failure(self) -> str | None:
        """What failed (errored or unfinished trials) and what to do, or None when every trial has a result."""
        failed = {k: self.counts.get(k, 0) for k in ("error", "unfinished") if self.counts.get(k, 0)}
        if not failed:
            return None
        what = " and ".join(f"{n} {'errored' if k == 'error' else 'unfinished'}" for k, n in failed.items())
        return (f"{what} of {len(self.results)} trials: see the error column of {self.results_csv}; fix the cause "
                "and rerun the same command (finished trials are kept; add --restart-errored to retry errored ones)")

    def _what(self) -> str:
        """"45 configurations", or with folds/seeds "90 trials of 45 configurations" (a row of results.csv is a
        trial: one fold or seed of a grid row)."""
        n = len(self.results)
        if not n or not {"fold", "seed"} & set(self.results.columns):
            return count_noun(n, "configuration")

        def opt(v):
            return None if pd.isna(v) else int(v)

        configs = {config_id(r["trial_id"], opt(r.get("fold")), opt(r.get("seed")))
                   for r in self.results.to_dict("records")}
        if len(configs) == n:
            return count_noun(n, "configuration")
        return f"{count_noun(n, 'trial')} of {count_noun(len(configs), 'configuration')}"

    def summary(self) -> str:
        """One line: counts, time, best configuration by test ``dice_volume_mean``."""
        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items()) or "no trials"
        m, s = divmod(int(round(self.elapsed_s)), 60)
        resumed = " (resumed)" if self.restored else ""
        line = f"sweep {self.name}{resumed}: {self._what()} ({counts}) in {m}m{s:02d}s"
        scored = self.results.dropna(subset=[RANK_BY]) if len(self.results) else self.results
        if len(scored):
            best = scored.loc[pd.to_numeric(scored[RANK_BY]).idxmax()]
            line += f"; best {best['trial_id']}: test dice_volume_mean {fmt_value(float(best[RANK_BY]))}"
        return f"{line}; results: {self.results_csv}"
