"""The statistics section's plots (PNG, matplotlib Agg, imported on first use): each configuration's mean with
its bootstrap CI, the rank-stability blob plot, and one plot per factor. Sized for a full 45-configuration
sweep: at most about 2,000 pixels wide, labels inside the image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from orchestrator.files import atomic_write
from orchestrator.report.stats import (
    FACTOR_NAMES,
    FactorComparison,
    RankStability,
    Statistics,
    level_label,
    level_order,
)

DPI = 110
MAX_WIDTH_IN = 18.0  # x DPI: under 2,000 pixels
COLOURS = {"best": "#d62728", "tied": "#1f77b4", "worse": "#9a9a9a"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """``fig`` as the PNG ``path``, written atomically, then closed."""
    plt = _pyplot()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _status(config_id: str, stats: Statistics) -> str:
    if config_id == stats.comparison.best:
        return "best"
    return "tied" if config_id in stats.comparison.tied else "worse"


def plot_ci(stats: Statistics, path: Path, baseline: float | None = None) -> Path:
    """One horizontal bar per configuration, highest mean at the top: the mean over its patients and the
    patient-bootstrap 95 % CI, coloured best / not distinguishable from the best / significantly worse."""
    plt = _pyplot()
    summary = stats.summary
    k = len(summary)
    fig, ax = plt.subplots(figsize=(8.5, max(3.0, 0.26 * k + 1.6)), layout="constrained")
    y = np.arange(k)
    status = [_status(c, stats) for c in summary["config_id"]]
    labels = {"best": "best", "tied": f"not distinguishable from best (Holm p ≥ {stats.comparison.alpha:g})",
              "worse": "significantly worse than best"}
    for key, colour in COLOURS.items():
        sel = np.array([s == key for s in status])
        if sel.any():
            rows = summary[sel]
            err = [rows["mean"] - rows["ci95_low"], rows["ci95_high"] - rows["mean"]]
            ax.errorbar(rows["mean"], y[sel], xerr=err, fmt="*" if key == "best" else "o", color=colour,
                        ms=9 if key == "best" else 5, capsize=2, lw=1.2, label=labels[key])
    _baseline(ax, baseline, summary["ci95_low"].min(), summary["ci95_high"].max())
    ax.set_yticks(y, summary["config_id"], fontsize=8 if k <= 25 else 7)
    ax.invert_yaxis()
    ax.set(xlabel="mean volume Dice over test patients (95 % patient-bootstrap CI)",
           title="Configurations by mean Dice: which are distinguishable from the best?")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=7, loc="outside lower center", ncol=2)
    return _save(fig, path)


def _baseline(ax, baseline: float | None, low: float, high: float) -> None:
    """The x range of the data, and the predict-nothing line in it; a baseline far below the data (Dice 0 under
    means of 0.6-0.8) would squash the differences that matter, so it is then named in the legend only."""
    pad = max(0.05 * (high - low), 0.005)
    if baseline is not None and baseline >= low - 0.25 * (high - low):
        low = min(low, baseline)
        ax.axvline(baseline, color="black", ls="--", lw=1, label=f"predict nothing ({baseline:g})")
    elif baseline is not None:
        ax.plot([], [], color="black", ls="--", lw=1, label=f"predict nothing: {baseline:g} (left of the axis)")
    ax.set_xlim(low - pad, high + pad)


def plot_rank_stability(ranks: RankStability, path: Path) -> Path:
    """The blob plot of Wiesenfarth et al. (2021, challengeR): configurations along x in their original rank
    order, the ranks they take over patient bootstraps along y, circle area = share of resamples at that rank;
    black crosses mark the median rank, black lines the 95 % rank interval."""
    plt = _pyplot()
    configs = list(ranks.counts.index)
    k = len(configs)
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH_IN, max(6.0, 2.5 + 0.34 * k)), min(10.0, max(3.5, 0.16 * k + 2.5))))
    long = ranks.counts.stack()
    long = long[long > 0]
    x = np.array([configs.index(c) for c in long.index.get_level_values(0)])
    share = long.to_numpy() / ranks.n_boot
    ax.scatter(x, long.index.get_level_values(1), s=share * 260, color="#1f77b4", alpha=0.6, lw=0)
    xs = np.arange(k)
    ax.vlines(xs, ranks.ci95_low[configs], ranks.ci95_high[configs], color="black", lw=0.8)
    ax.scatter(xs, ranks.median[configs], marker="x", color="black", s=25, lw=1, label="median rank")
    for s in (0.1, 0.5, 1.0):
        ax.scatter([], [], s=s * 260, color="#1f77b4", alpha=0.6, lw=0, label=f"{s:.0%} of bootstraps")
    ax.plot([0, k - 1], [1, k], color="#cccccc", lw=0.8, zorder=0)
    ax.set_xticks(xs, configs, rotation=90, fontsize=8 if k <= 25 else 7)
    ax.set(xlim=(-0.7, k - 0.3), ylim=(k + 0.7, 0.3), ylabel="rank (1 = best mean)",
           title=f"Rank stability over {ranks.n_boot:,} patient bootstraps")
    if k > 20:
        ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    else:
        ax.set_yticks(range(1, k + 1))
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), labelspacing=1.4)
    fig.tight_layout()
    return _save(fig, path)


def plot_factor(fc: FactorComparison, path: Path) -> Path:
    """Per level of the factor, its best configuration's paired mean difference to the best level's (0), with
    the patient-bootstrap 95 % CI and the Holm-adjusted p."""
    plt = _pyplot()
    c = fc.comparison
    order = level_order(fc.factor, c.rows[fc.factor])
    rows = c.rows.sort_values(fc.factor, key=lambda col: col.map(order.index)).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(min(MAX_WIDTH_IN, 2.5 + 1.5 * len(rows)), 4.2))
    for i, r in rows.iterrows():
        key = "best" if r["config_id"] == c.best else ("tied" if r["tied"] else "worse")
        err = [[r["diff_vs_best"] - r["diff_ci95_low"]], [r["diff_ci95_high"] - r["diff_vs_best"]]]
        ax.errorbar([i], [r["diff_vs_best"]], yerr=err, fmt="*" if key == "best" else "o", color=COLOURS[key],
                    ms=11 if key == "best" else 6, capsize=3)
        if key != "best":
            ax.annotate(f"p = {r['p_holm']:.2g}", (i, r["diff_ci95_high"]), textcoords="offset points",
                        xytext=(0, 4), ha="center", fontsize=7)
    ax.axhline(0, color="black", lw=0.8)
    labels = [f"{level_label(fc.factor, v)}\n{cid}" for v, cid in zip(rows[fc.factor], rows["config_id"])]
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set(xlim=(-0.6, len(rows) - 0.4), ylabel="Δ mean Dice vs best level (paired, 95 % CI)",
           title=f"{FACTOR_NAMES[fc.factor]}: the best configuration per level against the best level's")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def write_stats_plots(stats: Statistics, out_dir: str | os.PathLike,
                      baseline: float | None = None) -> dict[str, Path]:
    """Write ``plot_stats_ci.png``, ``plot_rank_stability.png`` and ``plot_factor_<factor>.png`` for every
    factor with two or more levels; returns the paths keyed by file stem less ``plot_``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"stats_ci": plot_ci(stats, out / "plot_stats_ci.png", baseline),
             "rank_stability": plot_rank_stability(stats.ranks, out / "plot_rank_stability.png")}
    for factor, fc in stats.factors.items():
        if fc.comparison is not None:
            paths[f"factor_{factor}"] = plot_factor(fc, out / f"plot_factor_{factor}.png")
    return paths
