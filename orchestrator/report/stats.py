"""Which differences between configurations are real: the statistics section of ``orch report``.

A sweep ranks its configurations by one mean each; two means that differ in the third decimal may be noise of
which patients happened to be tested. This module answers from the per-patient scores (``per_patient.csv``: one
row per trial and test patient, ``dice_volume`` in [0, 1]), with patients as the unit of replication:

    config_summary(table)           # per configuration: n, mean, median, patient-bootstrap 95 % CI, seed spread
    compare_to_best(table)          # Friedman over all, Holm-corrected paired Wilcoxon of each against the best
    rank_stability(table)           # how often each configuration takes each rank over patient bootstraps
    factor_comparison(table, "encoder")  # the best row per level, compared the same way
    write_statistics(table, out_dir)     # stats_*.csv, stats.md and (optionally) the plots

A patient tested under several seeds is first averaged over them (one score per configuration and patient). The
paired tests use the patients every configuration scored; the others are dropped and counted.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.errors import ResultsError
from orchestrator.files import atomic_write_text
from orchestrator.fmt import fmt_value
from orchestrator.report.tables import OPTIMIZER_ORDER, encoder_rank

METRIC = "dice_volume"
META = ["encoder", "optimizer", "lr"]
REQUIRED = ("config_id", *META, "patient", METRIC)
FACTORS = ("encoder", "optimizer", "lr")
FACTOR_NAMES = {"encoder": "Depth (encoder)", "optimizer": "Optimizer", "lr": "Learning rate"}
CSV_FILES = ("stats_summary", "stats_vs_best", "stats_factors", "stats_ranks")
MARKDOWN = "stats.md"
DECIMALS = 12  # bootstrap means are rounded to this before ranking: identical configurations tie exactly


@dataclass(frozen=True)
class PatientMatrix:
    """One score per (patient, configuration) on the patients every configuration scored.

    ``scores``: patients x config_id (sorted), ``dice_volume`` averaged over seeds; ``configs``: encoder,
    optimizer, lr by config_id; ``repeats``: the fewest and most rows averaged into one score (seeds);
    ``dropped``: patients some configuration did not score, left out of the paired analysis."""

    scores: pd.DataFrame
    configs: pd.DataFrame
    repeats: tuple[int, int]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class Friedman:
    """Friedman's test over configurations with patients as blocks; ``skipped`` says why it was not run."""

    statistic: float
    pvalue: float
    k: int
    n: int
    skipped: str | None = None


@dataclass(frozen=True)
class Comparison:
    """Every configuration against the best one (by mean on the common patients).

    ``rows`` (best first, then by mean): config_id, encoder, optimizer, lr, mean, median, diff_vs_best (paired
    mean difference, negative = worse), diff_ci95_low/high (patient bootstrap), wilcoxon_stat, p, p_holm, tied
    (Holm-adjusted p >= alpha: not significantly worse; the best is tied with itself)."""

    best: str
    alpha: float
    rows: pd.DataFrame
    friedman: Friedman
    n_patients: int
    dropped: tuple[str, ...]
    repeats: tuple[int, int]

    @property
    def tied(self) -> list[str]:
        """The configurations not significantly worse than the best, the best first."""
        return list(self.rows.loc[self.rows["tied"], "config_id"])

    def table(self) -> pd.DataFrame:
        """``rows`` with the Friedman result repeated on every row (the CSV layout)."""
        return self.rows.assign(friedman_chi2=self.friedman.statistic, friedman_p=self.friedman.pvalue,
                                n_patients=self.n_patients, n_dropped=len(self.dropped))


@dataclass(frozen=True)
class FactorComparison:
    """The best configuration of each level of ``factor`` compared paired over patients (``comparison``, whose
    rows carry the level in column ``factor``), or ``skipped`` with the reason."""

    factor: str
    comparison: Comparison | None
    skipped: str | None = None


@dataclass(frozen=True)
class RankStability:
    """Ranks (1 = best mean, ties averaged) over patient bootstraps, configurations in their original order.

    ``counts``: config_id x rank, how many of ``n_boot`` resamples gave it that rank; ``first``: share of
    resamples in which it had the highest mean (a tie shares the credit); ``original``, ``median``,
    ``ci95_low``/``ci95_high``: its rank on all patients and the median and 95 % interval over resamples."""

    original: pd.Series
    counts: pd.DataFrame
    first: pd.Series
    median: pd.Series
    ci95_low: pd.Series
    ci95_high: pd.Series
    n_boot: int

    def table(self) -> pd.DataFrame:
        """One row per configuration: ranks, share first, then ``rank_<r>`` counts (the CSV layout)."""
        head = pd.DataFrame({"original_rank": self.original, "median_rank": self.median,
                             "rank_ci95_low": self.ci95_low, "rank_ci95_high": self.ci95_high,
                             "share_first": self.first})
        counts = self.counts.rename(columns=lambda r: f"rank_{r:g}")
        return head.join(counts).rename_axis("config_id").reset_index()


@dataclass(frozen=True)
class Statistics:
    """Everything the statistics section reports (see :func:`analyse`)."""

    summary: pd.DataFrame
    comparison: Comparison
    ranks: RankStability
    factors: dict[str, FactorComparison]
    n_boot: int
    seed: int


def _test_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows with a test score, typed; a ResultsError names what is missing."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ResultsError(f"per-patient table lacks the column(s) {', '.join(missing)}: it needs one row per "
                           "trial and test patient (the sweep's per_patient.csv)")
    rows = table if "split" not in table.columns else table[table["split"].astype(str) == "test"]
    rows = rows.assign(config_id=rows["config_id"].astype(str), patient=rows["patient"].astype(str),
                       lr=rows["lr"].astype(float), **{METRIC: pd.to_numeric(rows[METRIC], errors="coerce")})
    rows = rows.dropna(subset=[METRIC])
    if rows.empty:
        raise ResultsError("per-patient table has no test row with a dice_volume: nothing to compare")
    return rows


def patient_matrix(table: pd.DataFrame) -> PatientMatrix:
    """The long per-patient table as one seed-averaged score per patient and configuration, on the patients
    common to every configuration (a ResultsError if there are none)."""
    rows = _test_rows(table)
    per = rows.groupby(["config_id", "patient"])[METRIC].agg(["mean", "size"])
    wide = per["mean"].unstack("config_id")
    common = wide.dropna()
    if common.empty:
        raise ResultsError(f"no test patient is scored by all {wide.shape[1]} configurations: the paired "
                           "comparison needs patients in common (did every trial finish?)")
    configs = rows.groupby("config_id")[META].first().loc[common.columns]
    dropped = tuple(sorted(wide.index.difference(common.index)))
    return PatientMatrix(common, configs, (int(per["size"].min()), int(per["size"].max())), dropped)


def _boot_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) weights: how often resample b drew each of n patients (with replacement), over n, so that
    ``weights @ x`` holds the mean of ``x`` over each resample."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n


def _means(scores: pd.DataFrame) -> pd.Series:
    return scores.mean().round(DECIMALS)


def _by_mean(scores: pd.DataFrame) -> list[str]:
    """Configurations by mean, highest first (equal means by name: a deterministic best)."""
    means = _means(scores)
    return sorted(scores.columns, key=lambda c: (-means[c], c))


def _spread(rows: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: how many seeds and folds, and the std of the per-seed (per-fold) means over patients."""
    out = pd.DataFrame(index=pd.Index(sorted(rows["config_id"].unique()), name="config_id"))
    for col, name in (("seed", "seeds"), ("fold", "folds")):
        sub = rows.dropna(subset=[col]) if col in rows.columns else rows.iloc[:0]
        per = sub.groupby(["config_id", col])[METRIC].mean().groupby(level="config_id")
        out[f"n_{name}"] = per.size().reindex(out.index).fillna(0).astype(int)
        out[f"{col}_sd"] = per.std(ddof=1).reindex(out.index)
    return out


def config_summary(table: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per configuration, over its own test patients (seed-averaged): n_patients, mean, median, the percentile
    patient-bootstrap 95 % CI of the mean (``n_boot`` resamples from one ``default_rng(seed)``), and the
    spread over seeds and folds (``seed_sd``, ``fold_sd``: std of the per-seed/per-fold means). Highest mean
    first."""
    rows = _test_rows(table)
    rng = np.random.default_rng(seed)
    per = rows.groupby(["config_id", "patient"])[METRIC].mean()
    out = []
    for config_id, scores in per.groupby(level="config_id"):
        v = scores.to_numpy()
        low, high = np.percentile(_boot_weights(rng, len(v), n_boot) @ v, [2.5, 97.5])
        out.append({"config_id": config_id, "n_patients": len(v), "mean": v.mean(), "median": np.median(v),
                    "ci95_low": low, "ci95_high": high})
    summary = rows.groupby("config_id")[META].first().join(pd.DataFrame(out).set_index("config_id"))
    summary = summary.join(_spread(rows)).reset_index()
    return summary.sort_values(["mean", "config_id"], ascending=[False, True], ignore_index=True)


def holm(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the input's order.

    scipy has none (``scipy.stats.false_discovery_control`` is Benjamini-Hochberg/Yekutieli, which controls the
    false discovery rate; Holm controls the family-wise error rate, which "not worse than the best" needs).
    The i-th smallest p is multiplied by (m - i + 1), made monotone from the smallest up, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty(p.size)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def wilcoxon_paired(diff) -> tuple[float, float]:
    """(statistic, two-sided p) of the Wilcoxon signed-rank test on paired per-patient differences; p = 1 when
    every difference is zero (identical scores: no evidence of a difference)."""
    d = np.asarray(diff, dtype=float)
    if not np.any(d != 0):
        return math.nan, 1.0
    from scipy.stats import wilcoxon

    # zero_method="wilcox" (scipy's default): a patient both configurations score identically (typically both 0,
    # neither found the tumour) says nothing about which is better and is dropped, as in Wilcoxon's test.
    # "zsplit" would count such patients half for each side and so dilute the evidence by the number of
    # ties rather than by the data; "wilcox" also lets a reader reproduce p with a plain scipy call.
    res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def _friedman(scores: pd.DataFrame) -> Friedman:
    n, k = scores.shape
    if k < 3:
        return Friedman(math.nan, math.nan, k, n, f"it needs at least 3 configurations, got {k} (the paired "
                                                  "Wilcoxon test below is the whole comparison)")
    if n < 2:
        return Friedman(math.nan, math.nan, k, n, f"it needs at least 2 patients in common, got {n}")
    from scipy.stats import friedmanchisquare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all ties: 0/0, reported as skipped below
        res = friedmanchisquare(*(scores[c].to_numpy() for c in scores.columns))
    if not np.isfinite(res.statistic):
        return Friedman(math.nan, math.nan, k, n, "every patient scores the same under every configuration")
    return Friedman(float(res.statistic), float(res.pvalue), k, n)


def _compare(m: PatientMatrix, alpha: float, n_boot: int, seed: int) -> Comparison:
    """Friedman over all of ``m``'s configurations, then each against the best: paired mean difference with a
    patient-bootstrap 95 % CI, Wilcoxon p and Holm-adjusted p."""
    order = _by_mean(m.scores)
    best = order[0]
    diffs = m.scores[order].sub(m.scores[best], axis=0)
    boot = _boot_weights(np.random.default_rng(seed), len(diffs), n_boot) @ diffs.to_numpy()
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    tests = [wilcoxon_paired(diffs[c]) for c in order[1:]]
    p = np.array([t[1] for t in tests])
    rows = m.configs.loc[order].reset_index()
    rows = rows.assign(mean=m.scores[order].mean().to_numpy(), median=m.scores[order].median().to_numpy(),
                       diff_vs_best=diffs.mean().to_numpy(), diff_ci95_low=low, diff_ci95_high=high,
                       wilcoxon_stat=[math.nan, *(t[0] for t in tests)], p=[math.nan, *p],
                       p_holm=[math.nan, *holm(p)], tied=[True, *(holm(p) >= alpha)])
    return Comparison(best, alpha, rows, _friedman(m.scores), len(m.scores), m.dropped, m.repeats)


def compare_to_best(table: pd.DataFrame, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """The best configuration by mean and every other against it, paired over the patients all configurations
    scored (Friedman test over all; two-sided Wilcoxon signed-rank, Holm-corrected; paired bootstrap CI of the
    mean difference). ``Comparison.tied`` lists those not significantly worse at ``alpha``."""
    return _compare(patient_matrix(table), alpha, n_boot, seed)


def _ranks(m: PatientMatrix, n_boot: int, seed: int) -> RankStability:
    from scipy.stats import rankdata

    x = m.scores.to_numpy()
    original = pd.Series(rankdata(-_means(m.scores).to_numpy()), index=m.scores.columns)
    boot = np.round(_boot_weights(np.random.default_rng(seed), len(x), n_boot) @ x, DECIMALS)
    ranks = pd.DataFrame(rankdata(-boot, axis=1), columns=m.scores.columns)
    top = boot == boot.max(axis=1, keepdims=True)
    first = pd.Series((top / top.sum(axis=1, keepdims=True)).mean(axis=0), index=m.scores.columns)
    long = ranks.melt(var_name="config_id", value_name="rank")
    counts = long.groupby(["config_id", "rank"]).size().unstack(fill_value=0)
    order = sorted(m.scores.columns, key=lambda c: (original[c], c))
    return RankStability(original[order], counts.loc[order].rename_axis(columns=None), first[order],
                         ranks.median()[order], ranks.quantile(0.025)[order], ranks.quantile(0.975)[order], n_boot)


def rank_stability(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> RankStability:
    """Bootstrap the common patients ``n_boot`` times and rank the configurations by mean in each resample
    (1 = best, ties averaged): each configuration's rank distribution, share ranked first and original rank."""
    return _ranks(patient_matrix(table), n_boot, seed)


def level_order(factor: str, levels) -> list:
    """Levels in the order the tables use: encoders by depth (the model registry), optimizers as in the paper,
    learning rates largest first."""
    if factor == "encoder":
        return sorted(levels, key=lambda e: (encoder_rank(e), e))
    if factor == "optimizer":
        rank = {o: i for i, o in enumerate(OPTIMIZER_ORDER)}
        return sorted(levels, key=lambda o: (rank.get(o, len(rank)), o))
    return sorted(levels, reverse=True)


def _level(factor: str, value) -> str:
    return f"{float(value):g}" if factor == "lr" else str(value)


def level_label(factor: str, value) -> str:
    """A level as the report names it: "resnet34", "adam", "lr 0.001"."""
    return f"lr {_level(factor, value)}" if factor == "lr" else str(value)


def fmt_ci(low, high) -> str:
    """A 95 % interval: "0.770-0.850", or "-0.030 to -0.006" once a bound is negative."""
    sep = " to " if min(low, high) < 0 else "-"
    return f"{fmt_value(low)}{sep}{fmt_value(high)}"


def _factor(m: PatientMatrix, factor: str, alpha: float, n_boot: int, seed: int) -> FactorComparison:
    levels = m.configs[factor].dropna()
    if levels.nunique() < 2:
        shown = ", ".join(_level(factor, v) for v in levels.unique())
        return FactorComparison(factor, None, f"one level only ({shown}): nothing to compare")
    order = _by_mean(m.scores)
    chosen = [next(c for c in order if levels.get(c) == lvl) for lvl in level_order(factor, levels.unique())]
    sub = replace(m, scores=m.scores[chosen], configs=m.configs.loc[chosen])
    return FactorComparison(factor, _compare(sub, alpha, n_boot, seed))


def factor_comparison(table: pd.DataFrame, factor: str, alpha: float = 0.05, n_boot: int = 2000,
                      seed: int = 0) -> FactorComparison:
    """Does ``factor`` (encoder, optimizer or lr) matter once the other settings are chosen? The best
    configuration of each level (by mean) is compared paired over patients, as :func:`compare_to_best` does
    for all configurations: Friedman over the levels and Holm-corrected Wilcoxon of each against the best level.
    The rows are picked on the same patients they are tested on, so the best level's lead is, if anything,
    overstated."""
    if factor not in FACTORS:
        raise ValueError(f"factor must be one of {', '.join(FACTORS)}, got {factor!r}")
    return _factor(patient_matrix(table), factor, alpha, n_boot, seed)


def analyse(table: pd.DataFrame, alpha: float = 0.05, n_boot: int = 2000, n_boot_rank: int = 1000,
            seed: int = 0) -> Statistics:
    """All of the above for one per-patient table (the patient matrix is built once)."""
    m = patient_matrix(table)
    return Statistics(config_summary(table, n_boot, seed), _compare(m, alpha, n_boot, seed),
                      _ranks(m, n_boot_rank, seed), {f: _factor(m, f, alpha, n_boot, seed) for f in FACTORS},
                      n_boot, seed)


def fmt_p(p) -> str:
    """A p-value as a person reads it: two significant digits, scientific below 1e-4, "–" when not computed."""
    if p is None or not np.isfinite(p):
        return "–"
    return f"{p:.1e}" if p < 1e-4 else f"{p:.2g}"


def _pct(share: float) -> str:
    return f"{100 * share:.0f} %"


def _data_sentence(c: Comparison, k: int) -> str:
    low, high = c.repeats
    text = (f"Per-patient volume Dice (`{METRIC}`) of {k} configurations on the {c.n_patients} test patients all "
            "of them scored")
    if high > 1:
        text += f"; each patient's Dice is first averaged over its {low if low == high else f'{low}-{high}'} seeds"
    if c.dropped:
        names = ", ".join(c.dropped[:10]) + (", ..." if len(c.dropped) > 10 else "")
        text += (f". {len(c.dropped)} patient(s) scored by only some configurations were dropped from the paired "
                 f"tests and ranks ({names}); the per-configuration means and CIs use all of each one's patients")
    return text + "."


def _headline(s: Statistics) -> str:
    c, summary = s.comparison, s.summary.set_index("config_id")
    b = summary.loc[c.best]
    text = (f"**{c.best} is best** (mean Dice {fmt_value(b['mean'])}, 95 % CI {fmt_ci(b['ci95_low'], b['ci95_high'])}, "
            f"{int(b['n_patients'])} patients). ")
    others = c.rows.iloc[1:]
    tied = others[others["tied"]]
    test = f"at alpha {c.alpha:g} (Holm-corrected paired Wilcoxon signed-rank test, two-sided)"
    if others.empty:
        return text + "It is the only configuration."
    if tied.empty:
        text += f"All {len(others)} others are significantly worse {test}."
    else:
        listed = ", ".join(f"{r.config_id} (p = {fmt_p(r.p_holm)})" for r in tied.itertuples())
        text += (f"{len(tied)} other(s) not distinguishable from it {test}: {listed}. "
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
    return (f" With {n} patients no comparison can be significant: the smallest possible p is {fmt_p(smallest)}, "
            f"x {m} comparisons (Holm) > {alpha:g}. Test more patients (`orch sweep --folds 5` tests every one).")


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
    return text + f". {can_win} configuration(s) have rank 1 inside their 95 % interval."


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
