"""The statistics section of ``orch report``: which configurations are distinguishable from the best, checked
against scipy and pandas computed independently on a synthetic per-patient table with known effects."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from orchestrator.errors import ResultsError
from orchestrator.report.stats import (
    analyse,
    compare_to_best,
    config_summary,
    factor_comparison,
    holm,
    rank_stability,
)
from orchestrator.report.stats_report import statistics_markdown, write_statistics

BEST, TWIN, BIG = "resnet34-adam-lr1e-03", "resnet34-adam-lr1e-04", "resnet50-sgd-lr1e-03"
# config_id -> (encoder, optimizer, lr, effect on every patient's Dice); TWIN repeats BEST's scores exactly
CONFIGS = {
    BEST: ("resnet34", "adam", 1e-3, 0.0),
    TWIN: ("resnet34", "adam", 1e-4, 0.0),
    "resnet18-adam-lr1e-03": ("resnet18", "adam", 1e-3, -0.01),
    "resnet18-sgd-lr1e-04": ("resnet18", "sgd", 1e-4, -0.05),
    "resnet50-adam-lr1e-04": ("resnet50", "adam", 1e-4, -0.02),
    BIG: ("resnet50", "sgd", 1e-3, -0.30),
}
N_PATIENTS, SEEDS = 30, (0, 1)


def _table(configs=CONFIGS, n_patients=N_PATIENTS, seeds=SEEDS, rng_seed=7) -> pd.DataFrame:
    """The long per-patient table a sweep with ``--seeds 2`` writes: one row per trial and test patient."""
    rng = np.random.default_rng(rng_seed)
    base = rng.uniform(0.5, 0.95, n_patients)
    noise = {s: rng.normal(0, 0.03, (len(configs), n_patients)) for s in seeds}
    rows = []
    for i, (cid, (enc, opt, lr, effect)) in enumerate(configs.items()):
        for s in seeds:
            dice = np.clip(base + effect + noise[s][0 if cid == TWIN else i], 0, 1)
            rows += [{"config_id": cid, "trial_id": f"{cid}-s{s}", "encoder": enc, "optimizer": opt, "lr": lr,
                      "fold": np.nan, "seed": s, "split": "test", "patient": f"TCGA_{p:02d}", "dice_volume": d,
                      "tumour_pixels_true": 100, "tumour_pixels_pred": 90} for p, d in enumerate(dice)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return _table()


@pytest.fixture(scope="module")
def wide(table) -> pd.DataFrame:
    """patients x configurations, seed-averaged, computed here independently of the module under test."""
    return table.pivot_table(index="patient", columns="config_id", values="dice_volume", aggfunc="mean")


def _holm_by_hand(p: list[float]) -> list[float]:
    m, order, out, running = len(p), sorted(range(len(p)), key=lambda i: p[i]), [0.0] * len(p), 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * p[i]))
        out[i] = running
    return out


def test_summary_mean_median_and_seed_spread_equal_pandas(table):
    summary = config_summary(table, n_boot=500).set_index("config_id")
    per_patient = table.groupby(["config_id", "patient"])["dice_volume"].mean().groupby("config_id")
    assert np.allclose(summary["mean"], per_patient.mean().loc[summary.index])
    assert np.allclose(summary["median"], per_patient.median().loc[summary.index])
    assert (summary["n_patients"] == N_PATIENTS).all() and (summary["n_seeds"] == 2).all()
    seed_means = table.groupby(["config_id", "seed"])["dice_volume"].mean().groupby("config_id").std()
    assert np.allclose(summary["seed_sd"], seed_means.loc[summary.index])
    assert (summary["ci95_low"] <= summary["mean"]).all() and (summary["mean"] <= summary["ci95_high"]).all()
    assert summary["fold_sd"].isna().all() and list(summary.index[:2]) == [BEST, TWIN]


def test_holm_matches_a_hand_computed_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(holm([0.5, 0.6]), [1.0, 1.0])
    assert holm([]).size == 0


def test_friedman_wilcoxon_and_holm_equal_scipy_on_the_pivot(table, wide):
    c = compare_to_best(table, n_boot=500)
    assert c.best == BEST and c.n_patients == N_PATIENTS and not c.dropped and c.repeats == (2, 2)
    expected = scipy.stats.friedmanchisquare(*(wide[col].to_numpy() for col in sorted(wide.columns)))
    assert c.friedman.skipped is None and (c.friedman.k, c.friedman.n) == (6, N_PATIENTS)
    assert c.friedman.statistic == pytest.approx(expected.statistic) and c.friedman.pvalue == pytest.approx(
        expected.pvalue)
    others = c.rows.iloc[1:]
    raw = [1.0 if np.all(wide[cid] == wide[BEST]) else scipy.stats.wilcoxon(wide[cid] - wide[BEST]).pvalue
           for cid in others["config_id"]]
    assert np.allclose(others["p"], raw)
    assert np.allclose(others["p_holm"], _holm_by_hand(raw))
    assert np.allclose(others["diff_vs_best"], [(wide[cid] - wide[BEST]).mean() for cid in others["config_id"]])
    assert (others["diff_ci95_low"] <= others["diff_vs_best"]).all()


def test_tied_set_is_exactly_the_configs_with_adjusted_p_at_least_alpha(table):
    c = compare_to_best(table, alpha=0.05, n_boot=500)
    others = c.rows.iloc[1:]
    assert c.tied == [BEST, *others.loc[others["p_holm"] >= 0.05, "config_id"]]
    assert TWIN in c.tied and c.rows.set_index("config_id").loc[TWIN, "p"] == 1.0  # identical scores
    assert BIG not in c.tied and c.rows.set_index("config_id").loc[BIG, "diff_ci95_high"] < -0.2


def test_bootstrap_is_reproducible_with_the_same_seed(table):
    assert config_summary(table, seed=3).equals(config_summary(table, seed=3))
    assert not config_summary(table, seed=3)["ci95_low"].equals(config_summary(table, seed=4)["ci95_low"])
    assert compare_to_best(table, seed=3).rows.equals(compare_to_best(table, seed=3).rows)
    assert rank_stability(table, n_boot=200, seed=3).table().equals(rank_stability(table, n_boot=200,
                                                                                    seed=3).table())


def test_rank_distribution_counts_sum_to_n_boot(table):
    r = rank_stability(table, n_boot=300)
    assert (r.counts.sum(axis=1) == 300).all()
    assert r.first.sum() == pytest.approx(1.0)
    assert r.original[BEST] == r.original[TWIN] == 1.5  # identical scores: tied ranks, averaged
    assert r.original[BIG] == 6 and r.counts.loc[BIG, 6.0] == 300 and r.first[BIG] == 0
    assert r.first[BEST] == r.first[TWIN] and list(r.counts.index[:2]) == [BEST, TWIN]
    assert "rank_1.5" in r.table().columns


def test_factor_comparison_pairs_the_best_row_of_each_level(table, wide):
    fc = factor_comparison(table, "encoder", n_boot=500)
    rows = fc.comparison.rows.set_index("encoder")
    means = wide.mean()
    for enc in ("resnet18", "resnet34", "resnet50"):
        of_level = [cid for cid, v in CONFIGS.items() if v[0] == enc]
        assert means[rows.loc[enc, "config_id"]] == pytest.approx(means[of_level].max())
    chosen = sorted(rows["config_id"])
    expected = scipy.stats.friedmanchisquare(*(wide[c].to_numpy() for c in chosen))
    assert fc.comparison.friedman.statistic == pytest.approx(expected.statistic)
    assert fc.comparison.best == BEST
    lr = factor_comparison(table, "lr", n_boot=200)
    assert lr.comparison.friedman.skipped and "at least 3" in lr.comparison.friedman.skipped
    one = factor_comparison(table[table["encoder"] == "resnet34"], "encoder")
    assert one.comparison is None and "one level only" in one.skipped


def test_markdown_names_the_best_and_the_number_of_ties(table):
    stats = analyse(table, n_boot=300, n_boot_rank=200)
    md = statistics_markdown(stats)
    n_ties = len(stats.comparison.tied) - 1
    others = f"{n_ties} other{'' if n_ties == 1 else 's'}"
    assert f"**{BEST} is best**" in md and f"{others} not distinguishable from it at alpha 0.05" in md
    assert "averaged over its 2 seeds" in md and "Friedman test over the 6 configurations" in md
    assert f"Rank stability: {BEST} ranks first in" in md and "of 200 patient bootstraps" in md
    assert "**Depth (encoder)**: the best resnet34 row" in md
    assert md.count(f"| {BIG} |") == 1


def _png_width(path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def test_write_statistics_writes_tables_markdown_and_plots(table, tmp_path):
    paths = write_statistics(table, tmp_path, baseline=0.0, n_boot=200, n_boot_rank=100)
    names = {p.name for p in paths.values()}
    assert {"stats_summary.csv", "stats_vs_best.csv", "stats_factors.csv", "stats_ranks.csv", "stats.md",
            "plot_stats_ci.png", "plot_rank_stability.png", "plot_factor_encoder.png", "plot_factor_optimizer.png",
            "plot_factor_lr.png"} == names
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    vs_best = pd.read_csv(paths["stats_vs_best"])
    assert vs_best["config_id"].iloc[0] == BEST and len(vs_best) == 6
    assert set(pd.read_csv(paths["stats_factors"])["factor"]) == {"encoder", "optimizer", "lr"}
    assert (pd.read_csv(paths["stats_ranks"]).filter(like="rank_").drop(
        columns=["rank_ci95_low", "rank_ci95_high"]).sum(axis=1) == 100).all()
    assert not list(tmp_path.glob(".*.tmp"))
    assert write_statistics(table, tmp_path / "np", plots=False, n_boot=50, n_boot_rank=50).keys() == {
        "stats_summary", "stats_vs_best", "stats_factors", "stats_ranks", "stats_markdown"}


def test_plots_of_45_configurations_stay_under_2000_pixels_wide(tmp_path):
    configs = {f"resnet{e}-{o}-lr{lr:.0e}": (f"resnet{e}", o, lr, -0.002 * i) for i, (e, o, lr) in enumerate(
        (e, o, lr) for e in (18, 34, 50, 101, 152) for o in ("adam", "sgd", "rmsprop") for lr in (1e-3, 1e-4, 1e-5))}
    paths = write_statistics(_table(configs, n_patients=20, seeds=(0,)), tmp_path, n_boot=100, n_boot_rank=100)
    assert all(_png_width(p) <= 2100 for k, p in paths.items() if p.suffix == ".png")


def test_two_configurations_skip_friedman_with_a_reason():
    two = {cid: CONFIGS[cid] for cid in (BEST, BIG)}
    c = compare_to_best(_table(two), n_boot=200)
    assert c.friedman.skipped.startswith("it needs at least 3 configurations, got 2")
    assert c.tied == [BEST] and c.rows.iloc[1]["p_holm"] == c.rows.iloc[1]["p"]
    assert "Friedman test skipped: it needs at least 3 configurations" in statistics_markdown(
        analyse(_table(two), n_boot=100, n_boot_rank=100))


def test_patients_missing_for_one_configuration_are_dropped_and_reported(table):
    gone = {"TCGA_03", "TCGA_11", "TCGA_20"}
    partial = table[~((table["config_id"] == BIG) & table["patient"].isin(gone))]
    stats = analyse(partial, n_boot=200, n_boot_rank=100)
    assert stats.comparison.n_patients == N_PATIENTS - 3 and set(stats.comparison.dropped) == gone
    n = stats.summary.set_index("config_id")["n_patients"]
    assert n[BIG] == N_PATIENTS - 3 and n[BEST] == N_PATIENTS
    assert "3 patients scored by only some configurations were dropped" in statistics_markdown(stats)
    assert (stats.ranks.counts.sum(axis=1) == 100).all()


def test_folds_without_seeds_and_bad_tables(table):
    folds = table[table["seed"] == 0].assign(seed=np.nan, fold=lambda t: t["patient"].str[-1].astype(int) % 3)
    summary = config_summary(folds, n_boot=100)
    assert (summary["n_folds"] == 3).all() and summary["seed_sd"].isna().all() and summary["fold_sd"].notna().all()
    assert compare_to_best(folds, n_boot=100).repeats == (1, 1)
    with pytest.raises(ResultsError, match="dice_volume"):
        compare_to_best(table.drop(columns=["dice_volume"]))
    with pytest.raises(ResultsError, match="no test row"):
        compare_to_best(table.assign(split="val"))


def test_too_few_patients_for_any_significance_is_said():
    from orchestrator.report.stats_report import _power_note

    assert "With 6 patients no comparison can be significant" in _power_note(6, 44, 0.05)  # 2/64 x 44 > 0.05
    assert _power_note(6, 1, 0.05) == ""  # 0.031 alone can be significant
    assert _power_note(30, 44, 0.05) == ""
