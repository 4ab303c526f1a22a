"""The results tables in the paper's layout: one table per learning rate, rows optimizer x depth, columns Loss,
Mean IoU, Dice, Iterations/second, the paper's number beside ours, and the predict-nothing baseline.

Which of our metrics stands beside which of the paper's (docs/design.md; all on test patients):
  Loss      <- ``test_loss`` (pixel-mean BCE on the test patients, the paper's loss)
  Mean IoU  <- ``test_miou_2class`` (background and tumour IoU averaged, the paper-style mIoU)
  Dice      <- ``test_dice_slice_all_empty1`` (slice mean, empty-vs-empty = 1: the generous, paper-style Dice)
  Dice/volume (ours only, the primary metric) <- ``test_dice_volume_mean``
  it/s      <- ``it_per_s`` (mean over epochs; our hardware, not the paper's)

The baseline row is a model that predicts nothing, scored on the trials' own test slices (``test_baseline_*`` of
results.csv, ``baseline``); a results table without those columns (written before they existed) gets the full
LGG's figures instead, labelled as a reference.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from orchestrator.errors import ResultsError
from orchestrator.files import atomic_write_text
from orchestrator.fmt import DIVERGED, fmt_value
from orchestrator.results_schema import RANK_BY, baseline_key, final_metric_key

PRIMARY = RANK_BY  # test_dice_volume_mean
OPTIMIZER_ORDER = ("adam", "sgd", "rmsprop")  # the paper's row order
# A model that predicts nothing, on the whole LGG dataset (docs/design.md): 2,556 of 3,929 slices are empty. The
# reference the paper's figures compare against, and the fallback for a results.csv without test_baseline_* columns.
BASELINE = {"Mean IoU": 0.495, "Dice": 0.651, "Dice/volume": 0.0}
BASELINE_LABEL = "predict nothing"
REFERENCE_LABEL = f"{BASELINE_LABEL} (full LGG)"
# Which results.csv column holds the measured baseline of each table column.
BASELINE_COLUMNS = {"Mean IoU": baseline_key("miou_2class"), "Dice": baseline_key("dice_slice_all_empty1"),
                    "Dice/volume": baseline_key("dice_volume_mean")}


@dataclass(frozen=True)
class Baseline:
    """The predict-nothing figures the tables and plots compare against (by table column: Mean IoU, Dice,
    Dice/volume): ``measured`` on the trials' own test slices, else the full LGG's reference. ``varies``: the
    trials were tested on different patients (cross-validation folds), and the figures are their mean."""

    figures: dict[str, float]
    measured: bool
    varies: bool = False

    @property
    def label(self) -> str:
        return BASELINE_LABEL if self.measured else REFERENCE_LABEL

    @property
    def where(self) -> str:
        """Which patients the figures are of, as a sentence ends it."""
        if not self.measured:
            return "on the full LGG dataset (a reference: this results table has no test_baseline_* columns)"
        return "on these test patients" + (" (mean over the trials' test sets)" if self.varies else "")


def baseline(results: pd.DataFrame) -> Baseline:
    """The predict-nothing baseline of ``results``: the mean of each ``BASELINE_COLUMNS`` column over the trials
    that recorded it (every trial tested on the same patients records the same figures), or the full-LGG
    ``BASELINE`` when any of those columns is missing or empty."""
    measured = {}
    for col, key in BASELINE_COLUMNS.items():
        values = pd.to_numeric(results[key], errors="coerce").dropna() if key in results.columns else pd.Series()
        if values.empty:
            return Baseline(dict(BASELINE), measured=False)
        measured[col] = values
    varies = any(float(v.max() - v.min()) > 1e-9 for v in measured.values())
    return Baseline({c: float(v.mean()) for c, v in measured.items()}, measured=True, varies=varies)

# (column, paper column in paper_results.csv, our candidates in results.csv, decimals)
COLUMNS = (
    ("Loss", "loss", (final_metric_key("val_loss"),), 3),
    ("Mean IoU", "mean_iou", (final_metric_key("miou_2class"),), 3),
    ("Dice", "dice", (final_metric_key("dice_slice_all_empty1"),), 3),
    ("Dice/volume", None, (PRIMARY,), 3),
    ("it/s", "it_per_s", ("it_per_s",), 2),
)
KEYS = ["lr", "optimizer", "encoder"]


def paper_results() -> pd.DataFrame:
    """The paper's 45 published rows (Tables 2-4): lr, optimizer, encoder, loss, mean_iou, dice, it_per_s."""
    with resources.files("orchestrator").joinpath("reference", "paper_results.csv").open() as f:
        return pd.read_csv(f)


@functools.cache
def _registered_encoders() -> tuple[str, ...]:
    import models  # loads torch: only once a table or plot is laid out

    return tuple(models.list_encoders())


def encoder_rank(encoder: str) -> int:
    """Where ``encoder`` goes in the tables and plots: its place in the model registry (shallowest first, as in
    the paper); names the registry does not hold go after."""
    known = _registered_encoders()
    return known.index(encoder) if encoder in known else len(known)


def _ours(results: pd.DataFrame) -> pd.DataFrame:
    missing = [k for k in KEYS if k not in results.columns]
    if missing:
        raise ResultsError(f"results table lacks the column(s) {', '.join(missing)}: it needs one row per "
                         "configuration with encoder, optimizer, lr (the sweep's results.csv)")
    out = results.copy()
    out["lr"] = out["lr"].astype(float)
    for col, _, candidates, _ in COLUMNS:
        src = next((c for c in candidates if c in out.columns), None)
        out[f"{col} (ours)"] = pd.to_numeric(out[src], errors="coerce") if src else math.nan
    if "status" not in out.columns:
        out["status"] = ""
    keep = KEYS + ["status"] + [f"{c} (ours)" for c, *_ in COLUMNS]
    return out[keep].drop_duplicates(KEYS, keep="last")


def paper_layout(results: pd.DataFrame) -> pd.DataFrame:
    """One long table: for every learning rate we ran, all of the paper's rows at that lr plus ours, side by
    side, then one baseline row (``baseline``: its label in the optimizer column). Columns: lr, optimizer,
    encoder, status, then ``<col> (paper)``/``(ours)``."""
    ours, base_line = _ours(results), baseline(results)
    paper = paper_results().rename(columns={p: f"{c} (paper)" for c, p, *_ in COLUMNS if p})
    paper = paper[paper["lr"].isin(ours["lr"].unique())]
    merged = paper.merge(ours, on=KEYS, how="outer")
    merged["status"] = merged["status"].fillna("not run")
    merged["_opt"] = merged["optimizer"].map({o: i for i, o in enumerate(OPTIMIZER_ORDER)}).fillna(len(OPTIMIZER_ORDER))
    merged["_depth"] = merged["encoder"].map(encoder_rank)
    merged = merged.sort_values(["lr", "_opt", "optimizer", "_depth", "encoder"],
                                ascending=[False, True, True, True, True])
    rows = []
    for lr, group in merged.groupby("lr", sort=False):
        rows.append(group)
        base = {"lr": lr, "optimizer": base_line.label, "encoder": "", "status": "baseline"}
        base.update({f"{c} (ours)": v for c, v in base_line.figures.items()})
        rows.append(pd.DataFrame([base]))
    table = pd.concat(rows, ignore_index=True).drop(columns=["_opt", "_depth"])
    cols = KEYS + ["status"]
    for c, p, *_ in COLUMNS:
        if p:
            cols.append(f"{c} (paper)")
        cols.append(f"{c} (ours)")
    return table[cols]


def _cell(v, decimals: int, diverged: bool = False) -> str:
    """A Markdown cell (``fmt_value``: 1.4e29 reads "1.4e+29", never 30 digits). Missing is "–", except in a
    diverged run's row, where a missing or non-finite figure reads "diverged"."""
    return fmt_value(v, decimals, missing=DIVERGED if diverged else "–")


def _baseline_note(table: pd.DataFrame) -> str:
    """The sentence under the tables about the baseline row of ``table`` (measured or the full-LGG reference)."""
    rows = table[table["status"] == "baseline"]
    if rows.empty:
        return ""
    row = rows.iloc[0]
    figures = (f"Mean IoU {_cell(row['Mean IoU (ours)'], 3)}, Dice {_cell(row['Dice (ours)'], 3)} and "
               f"Dice/volume {_cell(row['Dice/volume (ours)'], 3)}")
    if row["optimizer"] == REFERENCE_LABEL:
        return (f"A model that predicts nothing scores {figures} on the full LGG dataset (the {REFERENCE_LABEL} "
                "row: this results table has no test_baseline_* columns, so these reference figures stand in for "
                "the test patients' own): compare the paper's figures against that row.")
    return (f"A model that predicts nothing scores {figures} on these test patients (the {BASELINE_LABEL} row, "
            "scored on the very slices each trial was tested on: test_baseline_* of results.csv); on the full LGG "
            f"dataset it scores Mean IoU {BASELINE['Mean IoU']} and Dice {BASELINE['Dice']}: compare the paper's "
            "figures against those.")


def to_markdown(table: pd.DataFrame) -> str:
    """The tables as Markdown, one section per learning rate (largest first, as in the paper)."""
    decimals = {c: d for c, _, _, d in COLUMNS}
    header = ["Optimizer", "Encoder", "Status"]
    for c, p, *_ in COLUMNS:
        header += [f"{c} paper", f"{c} ours"] if p else [f"{c} ours"]
    out = []
    for lr, group in table.groupby("lr", sort=False):
        out += [f"### Learning rate {lr:g}", "", "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header)]
        for _, r in group.iterrows():
            cells = [str(r["optimizer"]), str(r["encoder"]), str(r["status"])]
            diverged = r["status"] == DIVERGED
            for c, p, *_ in COLUMNS:
                if p:
                    cells.append(_cell(r[f"{c} (paper)"], decimals[c]))
                cells.append(_cell(r[f"{c} (ours)"], decimals[c], diverged))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out.append(
        "Ours: test patients, best-validation checkpoint. Loss = BCE (test_loss); Mean IoU = miou_2class; "
        "Dice = dice_slice_all_empty1 (slice mean, empty-vs-empty = 1, the paper-style figure); Dice/volume = "
        "dice_volume_mean (per-patient volume Dice, our primary metric). "
        f"{_baseline_note(table)} it/s depends on hardware and batch size (the paper states neither)."
    )
    return "\n".join(out) + "\n"


def write_tables(results: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``paper_tables.csv`` (long form, every lr, raw numbers for programs) and ``paper_tables.md`` (for
    people: figures through ``fmt_value``) into ``out_dir``.

    ``results`` is the sweep's results.csv (one row per configuration). Returns ``{"csv": ..., "markdown": ...}``.
    """
    table = paper_layout(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "paper_tables.csv", "markdown": out / "paper_tables.md"}
    atomic_write_text(paths["csv"], table.to_csv(index=False))
    atomic_write_text(paths["markdown"], to_markdown(table))
    return paths
