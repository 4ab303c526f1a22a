"""Run plots (matplotlib, Agg backend: no display needed): the learning curve and a validation overlay."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Train loss and val_loss (left), validation Dice (right) per epoch -> PNG at ``path``."""
    plt = _pyplot()
    fig, (ax_l, ax_d) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [h.get(key) if h.get(key) is not None else math.nan for h in history]

    ax_l.plot(epochs, series("loss"), "o-", label="train loss")
    ax_l.plot(epochs, series("val_loss"), "s-", label="val loss")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_l, ax_d):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss")
    ax_l.set_yscale("log")
    ax_l.legend()
    for key in ("dice_volume_mean", "dice_global", "dice_slice_all_empty1"):
        ax_d.plot(epochs, series(key), "o-", label=key)
    ax_d.set_xlabel("epoch")
    ax_d.set_ylabel("validation")
    ax_d.set_ylim(0, 1)
    ax_d.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a (H, W) {0, 1} mask: the mask minus its 4-neighbour erosion."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def overlay(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, titles: list[str], path: str | Path) -> Path:
    """One row per slice: the FLAIR channel, truth outlined (green), prediction outlined (red).

    images (K, H, W, 3) uint8, truth and pred (K, H, W) {0, 1}. Outlines are painted into RGB arrays (no
    matplotlib contouring: it costs seconds per panel on a busy CPU)."""
    plt = _pyplot()
    k = len(images)
    fig, axes = plt.subplots(k, 3, figsize=(7.5, 2.5 * k), squeeze=False)
    for i in range(k):
        flair = np.repeat(images[i, ..., 1:2], 3, axis=-1)
        panels = [("image", flair)]
        for name, m, colour in (("truth", truth[i], (0, 255, 0)), ("prediction", pred[i], (255, 0, 0))):
            rgb = flair.copy()
            rgb[_outline(m)] = colour
            panels.append((name, rgb))
        for j, (name, rgb) in enumerate(panels):
            axes[i, j].imshow(rgb, interpolation="nearest")
            axes[i, j].set_title(f"{titles[i]} {name}" if j == 0 else name, fontsize=8)
            axes[i, j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def cv_dice(rows: list[dict[str, Any]], summary: dict[str, Any], path: str | Path,
            references: dict[str, float] | None = None) -> Path:
    """Per-patient volume Dice of a cross-validation, one column of points per fold plus all patients (box), with
    the mean and horizontal reference lines (published figures) -> PNG at ``path``."""
    plt = _pyplot()
    folds = sorted({int(r["fold"]) for r in rows})
    fig, ax = plt.subplots(figsize=(1.6 + 0.9 * (len(folds) + 1), 4.0))
    rng = np.random.default_rng(0)
    for i, k in enumerate(folds):
        d = [r["dice"] for r in rows if int(r["fold"]) == k]
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=12, alpha=0.7)
    everything = [r["dice"] for r in rows]
    ax.boxplot([everything], positions=[len(folds)], widths=0.5, showmeans=True)
    for (label, value), style in zip((references or {}).items(), (":", "--", "-.")):
        ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=f"{label} {value:.2f}")
    ax.set_xticks(range(len(folds) + 1), [f"fold {k}" for k in folds] + ["all"])
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Dice per patient volume")
    n = summary["n_patients"]
    ax.set_title(f"{n} patient{'' if n == 1 else 's'}: mean {summary['mean']:.3f}, median {summary['median']:.3f}, "
                 f"95% CI {summary['ci95_low']:.3f}-{summary['ci95_high']:.3f}", fontsize=9)
    if references:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
