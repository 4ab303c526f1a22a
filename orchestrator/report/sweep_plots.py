"""The sweep's plots (PNG, matplotlib Agg): the accuracy/speed trade-off per depth, optimizer x lr heatmaps per
depth, and the paper's numbers beside ours with the predict-nothing baseline drawn in (``tables.baseline``: of the
trials' own test patients where results.csv records it). Sized for a full 45-configuration sweep: at most about
2,000 pixels wide."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from orchestrator.files import atomic_write  # noqa: E402
from orchestrator.report.tables import (  # noqa: E402
    BASELINE,
    OPTIMIZER_ORDER,
    PRIMARY,
    REFERENCE_LABEL,
    Baseline,
    baseline,
    encoder_rank,
    paper_layout,
    paper_results,
)
from orchestrator.results_schema import final_metric_key  # noqa: E402

DPI = 110
MAX_WIDTH_IN = 18.0  # x DPI: under 2,000 pixels
PAPER_BARS = (("Dice (paper)", "#999999"), ("Dice (ours)", "#1f77b4"), ("Mean IoU (paper)", "#cccccc"),
              ("Mean IoU (ours)", "#aec7e8"), ("Dice/volume (ours)", "#d62728"))


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as the PNG ``path`` (atomically) and free it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _by_depth(encoders) -> list[str]:
    return sorted(encoders, key=lambda e: (encoder_rank(e), e))


def _ours(results: pd.DataFrame) -> pd.DataFrame:
    df = results.copy()
    df["lr"] = df["lr"].astype(float)
    for col in (PRIMARY, "it_per_s", final_metric_key("dice_slice_all_empty1")):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else math.nan
    return df


def dice_vs_speed(results: pd.DataFrame, path: Path) -> Path:
    """Two panels, one colour per depth: ours (test Dice/volume vs it/s, with the measured predict-nothing
    Dice/volume where results.csv records it) and the paper's (Dice vs it/s, with the full LGG's predict-nothing
    Dice: the paper's data)."""
    ours, paper, base = _ours(results), paper_results(), baseline(results)
    depths = _by_depth(set(ours["encoder"].dropna()) | set(paper["encoder"]))
    colours = dict(zip(depths, plt.cm.viridis(np.linspace(0, 0.9, max(len(depths), 1)))))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, df, ycol, title in ((axes[0], ours, PRIMARY, "ours: test Dice per volume"),
                                (axes[1], paper, "dice", "paper: Dice")):
        for enc in depths:
            sub = df[df["encoder"] == enc]
            ax.scatter(sub["it_per_s"], sub[ycol], color=colours[enc], label=enc, s=28)
        ax.set(xlabel="iterations / second", ylabel="Dice", title=title, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    if base.measured:
        value = base.figures["Dice/volume"]
        axes[0].axhline(value, color="red", ls="--", lw=1, label=f"{base.label}, test patients ({value:.3f})")
    axes[1].axhline(BASELINE["Dice"], color="red", ls="--", lw=1, label=f"{REFERENCE_LABEL} ({BASELINE['Dice']})")
    for ax in axes:
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Accuracy against speed, per encoder depth (our speed is our hardware's)")
    return _save(fig, path)


def heatmaps(results: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One figure per depth we ran: optimizer x lr of our test Dice/volume, and the paper's Dice beside it."""
    ours, paper = _ours(results), paper_results()
    lrs = sorted(set(ours["lr"]) | set(paper["lr"]), reverse=True)
    paths = []
    for enc in _by_depth(ours["encoder"].dropna().unique()):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
        for ax, df, col, title in ((axes[0], ours, PRIMARY, "ours: test Dice/volume"),
                                   (axes[1], paper, "dice", "paper: Dice")):
            grid = np.full((len(OPTIMIZER_ORDER), len(lrs)), np.nan)
            sub = df[df["encoder"] == enc]
            for _, r in sub.iterrows():
                if r["optimizer"] in OPTIMIZER_ORDER and r["lr"] in lrs:
                    grid[OPTIMIZER_ORDER.index(r["optimizer"]), lrs.index(r["lr"])] = r[col]
            cmap = plt.get_cmap("magma").with_extremes(bad="#dddddd")  # not run / no value: grey, "–"
            im = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap=cmap)
            for i, j in np.ndindex(grid.shape):
                nan = np.isnan(grid[i, j])
                ax.text(j, i, "–" if nan else f"{grid[i, j]:.3f}", ha="center", va="center",
                        color="white" if not nan and grid[i, j] < 0.6 else "black", fontsize=8)
            ax.set(xticks=range(len(lrs)), xticklabels=[f"{lr:g}" for lr in lrs], yticks=range(len(OPTIMIZER_ORDER)),
                   yticklabels=OPTIMIZER_ORDER, xlabel="learning rate", title=title)
        fig.colorbar(im, ax=axes, shrink=0.8)
        fig.suptitle(f"{enc}: optimizer x learning rate")
        paths.append(_save(fig, out_dir / f"plot_heatmap_{enc}.png"))
    return paths


def _paper_bars(ax, rows: pd.DataFrame, slots: int) -> None:
    """The ``PAPER_BARS`` of ``rows`` (one learning rate's configurations) on ``ax``, ``slots`` places wide."""
    x = np.arange(len(rows))
    width = 0.8 / len(PAPER_BARS)
    for i, (col, colour) in enumerate(PAPER_BARS):
        ax.bar(x + (i - len(PAPER_BARS) / 2 + 0.5) * width, rows[col].astype(float).fillna(0), width, label=col,
               color=colour)
    ax.set_xticks(x, [f"{r.encoder}\n{r.optimizer}" for r in rows.itertuples()], fontsize=7)
    ax.set(xlim=(-0.6, slots - 0.4), ylim=(0, 1.05), ylabel="score")


def _baseline_lines(ax, base: Baseline) -> None:
    """The predict-nothing Dice and mIoU as dashed lines, named by where they were measured."""
    where = "test patients" if base.measured else "full LGG"
    ax.axhline(base.figures["Dice"], color="red", ls="--", lw=1,
               label=f"predict nothing ({where}): Dice {base.figures['Dice']:.3f}")
    ax.axhline(base.figures["Mean IoU"], color="orange", ls=":", lw=1,
               label=f"predict nothing ({where}): mIoU {base.figures['Mean IoU']:.3f}")


def paper_vs_ours(results: pd.DataFrame, path: Path) -> Path:
    """For every configuration we ran, one panel per learning rate: the paper's Dice and mIoU, our paper-style
    Dice and mIoU and our Dice/volume, with the predict-nothing baseline (``tables.baseline``) as dashed lines."""
    table = paper_layout(results)
    table = table[~table["status"].isin(["not run", "baseline"])]
    lrs = list(dict.fromkeys(table["lr"]))  # paper_layout's order: largest first
    slots = max([int((table["lr"] == lr).sum()) for lr in lrs] + [1])
    width = min(MAX_WIDTH_IN, max(6.0, 0.9 * slots + 2))
    fig, axes = plt.subplots(max(len(lrs), 1), 1, figsize=(width, 2.9 * max(len(lrs), 1) + 1.3), squeeze=False,
                             layout="constrained")
    base = baseline(results)
    for ax, lr in zip(axes[:, 0], lrs):
        _paper_bars(ax, table[table["lr"] == lr], slots)
        _baseline_lines(ax, base)
        ax.set_title(f"learning rate {lr:g}", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=4, loc="outside lower center")
    fig.suptitle("The paper's numbers beside ours (ours: test patients)")
    return _save(fig, path)


def write_plots(results: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``plot_dice_vs_speed.png``, ``plot_heatmap_<encoder>.png`` per depth and ``plot_paper_vs_ours.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"dice_vs_speed": dice_vs_speed(results, out / "plot_dice_vs_speed.png"),
             "paper_vs_ours": paper_vs_ours(results, out / "plot_paper_vs_ours.png")}
    for p in heatmaps(results, out):
        paths[p.stem.removeprefix("plot_")] = p
    return paths
