"""Which differences between configurations are real: the statistics section of ``orch report``.

A sweep ranks its configurations by one mean each; two means that differ in the third decimal may be noise of
which patients happened to be tested. This module answers from the per-patient scores (``per_patient.csv``: one
row per trial and test patient, ``dice_volume`` in [0, 1]), with patients as the unit of replication:

    config_summary(table)           # per configuration: n, mean, median, patient-bootstrap 95 % CI, seed spread
    compare_to_best(table)          # Friedman over all, Holm-corrected paired Wilcoxon of each against the best
    rank_stability(table)           # how often each configuration takes each rank over patient bootstraps
    factor_comparison(table, "encoder")  # the best row per level, compared the same way
    stats_report.write_statistics(table, out_dir)  # stats_*.csv, stats.md and (optionally) the plots

A patient tested under several seeds is first averaged over them (one score per configuration and patient). The
paired tests use the patients every configuration scored; the others are dropped and counted.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from orchestrator.errors import ResultsError
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
