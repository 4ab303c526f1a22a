"""The statistics section rendered and written: ``stats.md`` (an answer, not a dump), the ``stats_*.csv`` tables
and, through ``stats_plots``, its plots. The numbers come from ``orchestrator.report.stats``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.files import atomic_write_text
from orchestrator.fmt import count_noun, fmt_value
from orchestrator.report.stats import (
    CSV_FILES,
    FACTOR_NAMES,
    MARKDOWN,
    METRIC,
    Comparison,
    FactorComparison,
    Friedman,
    Statistics,
    _level,
    analyse,
    fmt_ci,
    level_label,
    level_order,
)


def fmt_p(p) -> str:
    """A p-value as a person reads it: two significant digits, scientific below 1e-4, "–" when not computed."""
    if p is None or not np.isfinite(p):
        return "–"
    return f"{p:.1e}" if p < 1e-4 else f"{p:.2g}"


def _pct(share: float) -> str:
    return f"{100 * share:.0f} %"


def _data_sentence(c: Comparison, k: int) -> str:
    low, high = c.repeats
    text = (f"Per-patient volume Dice (`{METRIC}`) of {count_noun(k, 'configuration')} on the "
            f"{count_noun(c.n_patients, 'test patient')} that all of them scored")
    if high > 1:
        text += f"; each patient's Dice is first averaged over its {low if low == high else f'{low}-{high}'} seeds"
    if c.dropped:
        names = ", ".join(c.dropped[:10]) + (", ..." if len(c.dropped) > 10 else "")
        text += (f". {count_noun(len(c.dropped), 'patient')} scored by only some configurations "
                 f"{'was' if len(c.dropped) == 1 else 'were'} dropped from the paired tests and ranks ({names}); "
                 "the per-configuration means and CIs use all of each one's patients")
    return text + "."


def _headline(s: Statistics) -> str:
    c, summary = s.comparison, s.summary.set_index("config_id")
    b = summary.loc[c.best]
    text = (f"**{c.best} is best** (mean Dice {fmt_value(b['mean'])}, 95 % CI {fmt_ci(b['ci95_low'], b['ci95_high'])}, "
            f"{count_noun(int(b['n_patients']), 'patient')}). ")
    others = c.rows.iloc[1:]
    tied = others[others["tied"]]
    test = f"at alpha {c.alpha:g} (Holm-corrected paired Wilcoxon signed-rank test, two-sided)"
    if others.empty:
        return text + "It is the only configuration."
    if tied.empty:
        lead = f"All {len(others)} others are" if len(others) > 1 else "The other is"
        text += f"{lead} significantly worse {test}."
    else:
        listed = ", ".join(f"{r.config_id} (p = {fmt_p(r.p_holm)})" for r in tied.itertuples())
        text += (f"{count_noun(len(tied), 'other')} not distinguishable from it {test}: {listed}. "
                 f"{len(others) - len(tied)} significantly worse.")
    width = float(np.median((others["diff_ci95_high"] - others["diff_ci95_low"]) / 2))
    return text + (f" Not distinguishable is not equal: the paired 95 % CIs of the differences are about "
                   f"±{fmt_value(width)} wide, so smaller differences cannot be resolved with these patients."
                   + _power_note(c.n_patients, len(others), c.alpha))


def _power_note(n: int, m: int, alpha: float) -> str:
    """A warning when ``n`` patients cannot make any of ``m`` Holm-corrected comparisons significant: the smallest
    exact two-sided Wilcoxon p over n pairs is 2 / 2**n (every difference of one sign), and Holm multiplies the
    smallest p by m."""
    smallest = min(1.0, 2.0 / 2.0 ** n) if n < 64 else 0.0
    if smallest * m <= alpha:
        return ""
    return (f" With {count_noun(n, 'patient')} no comparison can be significant: the smallest possible p is "
            f"{fmt_p(smallest)}, x {count_noun(m, 'comparison')} (Holm) > {alpha:g}. Test more patients "
            "(`orch sweep --folds 5` tests every one).")


def _friedman_sentence(f: Friedman, alpha: float, what: str = "configurations") -> str:
    if f.skipped:
        return f"Friedman test skipped: {f.skipped}."
    verdict = (f"the {what} differ" if f.pvalue < alpha else f"no evidence at alpha {alpha:g} that the {what} "
               "differ at all")
    return (f"Friedman test over the {f.k} {what} (patients as blocks): chi2 = {f.statistic:.2f}, "
            f"p = {fmt_p(f.pvalue)}: {verdict}.")


def _rank_sentence(s: Statistics) -> str:
    r, best = s.ranks, s.comparison.best
    text = (f"Rank stability: {best} ranks first in {_pct(r.first[best])} of {r.n_boot:,} patient bootstraps "
            f"(rank 95 % interval {r.ci95_low[best]:g}-{r.ci95_high[best]:g})")
    rivals = r.first.drop(best).sort_values(ascending=False)
    rivals = rivals[rivals > 0]
    if not rivals.empty:
        text += "; also first: " + ", ".join(f"{c} {_pct(v)}" for c, v in rivals.head(5).items())
    can_win = int((r.ci95_low <= 1).sum())
    return text + (f". {count_noun(can_win, 'configuration')} {'has' if can_win == 1 else 'have'} rank 1 inside "
                   f"{'its' if can_win == 1 else 'their'} 95 % interval.")


def _factor_sentence(fc: FactorComparison) -> str:
    name = FACTOR_NAMES[fc.factor]
    if fc.comparison is None:
        return f"**{name}**: {fc.skipped}."
    c = fc.comparison
    lead, others = c.rows.iloc[0], c.rows.iloc[1:]
    text = (f"**{name}**: the best {level_label(fc.factor, lead[fc.factor])} row ({lead['config_id']}, mean "
            f"{fmt_value(lead['mean'])}) leads")
    for tied, verb in ((True, "not distinguishable from it"), (False, "significantly worse")):
        part = others[others["tied"] == tied]
        if not part.empty:
            listed = ", ".join(f"{level_label(fc.factor, v)} (p = {fmt_p(p)})"
                               for v, p in zip(part[fc.factor], part["p_holm"]))
            text += f"; the best row of {listed}: {verb}"
    return text + ". " + _friedman_sentence(c.friedman, c.alpha, "levels")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _vs_best_cells(r, best: str) -> list[str]:
    """Δ vs best, its CI, p (Holm), Same as best: the cells both tables share ("best" row: no test)."""
    if r.config_id == best:
        return ["0", "–", "–", "best"]
    return [fmt_value(r.diff_vs_best), fmt_ci(r.diff_ci95_low, r.diff_ci95_high), fmt_p(r.p_holm),
            "yes" if r.tied else "no"]


def _config_table(s: Statistics) -> list[str]:
    summary, ranks = s.summary.set_index("config_id"), s.ranks
    header = ["Rank", "Configuration", "Patients", "Mean", "Median", "95% CI", "Seed SD", "Δ vs best",
              "Δ 95% CI", "p (Holm)", "Same as best", "First", "Rank 95% interval"]
    out = [_row(header), "|" + "---|" * len(header)]
    for r in s.comparison.rows.itertuples():
        a, cid = summary.loc[r.config_id], r.config_id
        out.append(_row([f"{ranks.original[cid]:g}", cid, str(int(a["n_patients"])), fmt_value(a["mean"]),
                         fmt_value(a["median"]), fmt_ci(a["ci95_low"], a["ci95_high"]),
                         fmt_value(a["seed_sd"], missing="–"), *_vs_best_cells(r, s.comparison.best),
                         _pct(ranks.first[cid]), f"{ranks.ci95_low[cid]:g}-{ranks.ci95_high[cid]:g}"]))
    return out


def _factor_table(fc: FactorComparison) -> list[str]:
    header = ["Level", "Best configuration", "Mean", "Δ vs best level", "Δ 95% CI", "p (Holm)", "Same as best"]
    out = [_row(header), "|" + "---|" * len(header)]
    c = fc.comparison
    order = level_order(fc.factor, c.rows[fc.factor])
    for r in c.rows.sort_values(fc.factor, key=lambda col: col.map(order.index)).itertuples():
        out.append(_row([level_label(fc.factor, getattr(r, fc.factor)), r.config_id, fmt_value(r.mean),
                         *_vs_best_cells(r, c.best)]))
    return out


def _method_note(s: Statistics) -> str:
    return (f"Method: Mean, Median and 95% CI per configuration over its own test patients (percentile bootstrap "
            f"over patients, {s.n_boot:,} resamples, seed {s.seed}); Seed SD = std of the per-seed means. Δ vs best "
            "= paired mean difference on the common patients, with its patient-bootstrap 95% CI. p (Holm) = "
            "two-sided Wilcoxon signed-rank test on the paired per-patient differences (patients scored "
            "identically are left out), Holm-adjusted over the comparisons with the best. Same as best = adjusted "
            f"p >= {s.comparison.alpha:g}: not significantly worse, which is not evidence of equality. The best is "
            "picked on the patients it is tested on, so its lead is if anything overstated. Rank: 1 = best mean "
            f"(ties averaged); First and Rank 95% interval over {s.ranks.n_boot:,} patient bootstraps. Per factor, "
            "each level's best configuration stands for the level (Holm over that factor's levels): does the factor "
            "matter once the other settings are chosen for it?")


def statistics_markdown(stats: Statistics) -> str:
    """The statistics section of the report as Markdown: the answer in sentences, then the tables."""
    c = stats.comparison
    out = ["### Which differences are real", "", _data_sentence(c, len(c.rows)), "", _headline(stats), "",
           _friedman_sentence(c.friedman, c.alpha), "", _rank_sentence(stats), "", "#### Per factor", ""]
    for fc in stats.factors.values():
        out += [_factor_sentence(fc), ""]
        if fc.comparison is not None:
            out += [*_factor_table(fc), ""]
    out += ["#### Every configuration against the best", "", *_config_table(stats), "", _method_note(stats), ""]
    return "\n".join(out)


def _factor_rows(stats: Statistics) -> pd.DataFrame:
    parts = [fc.comparison.table().assign(factor=f, level=fc.comparison.rows[f].map(lambda v, f=f: _level(f, v)))
             for f, fc in stats.factors.items() if fc.comparison is not None]
    if not parts:
        return pd.DataFrame(columns=["factor", "level", "config_id"])
    table = pd.concat(parts, ignore_index=True)
    return table[["factor", "level", *[c for c in table.columns if c not in ("factor", "level")]]]


def write_statistics(table: pd.DataFrame, out_dir: str | os.PathLike, plots: bool = True, *,
                     baseline: float | None = None, alpha: float = 0.05, n_boot: int = 2000,
                     n_boot_rank: int = 1000, seed: int = 0) -> dict[str, Path]:
    """Write ``stats_summary.csv``, ``stats_vs_best.csv``, ``stats_factors.csv``, ``stats_ranks.csv`` and
    ``stats.md`` into ``out_dir`` and, unless ``plots`` is False, ``plot_stats_ci.png``,
    ``plot_rank_stability.png`` and ``plot_factor_<factor>.png`` (``baseline``: a predict-nothing Dice drawn as
    a line). ``table`` is the sweep's per_patient.csv. Returns the paths by key (file stem, less ``plot_``)."""
    stats = analyse(table, alpha, n_boot, n_boot_rank, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = dict(zip(CSV_FILES, (stats.summary, stats.comparison.table(), _factor_rows(stats), stats.ranks.table())))
    paths = {}
    for key, frame in frames.items():
        paths[key] = out / f"{key}.csv"
        atomic_write_text(paths[key], frame.to_csv(index=False))
    paths["stats_markdown"] = out / MARKDOWN
    atomic_write_text(paths["stats_markdown"], statistics_markdown(stats))
    if plots:
        from orchestrator.report.stats_plots import write_stats_plots  # matplotlib: slow to load

        paths.update(write_stats_plots(stats, out, baseline))
    return paths
