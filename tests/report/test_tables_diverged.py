"""A diverged configuration in the paper-layout tables: people read "diverged" or a short scientific number in the
Markdown, never a 30-digit float; programs still read raw numbers from the CSV."""

from __future__ import annotations

import math
import re

import pandas as pd

from orchestrator.report import write_tables


def _results() -> pd.DataFrame:
    return pd.DataFrame([
        {"trial_id": "a", "encoder": "resnet18", "optimizer": "adam", "lr": 1e-2, "status": "finished",
         "test_dice_volume_mean": 0.71, "test_dice_slice_all_empty1": 0.83, "test_miou_2class": 0.77,
         "test_loss": 2.3e-05, "it_per_s": 1.5},
        {"trial_id": "b", "encoder": "resnet34", "optimizer": "sgd", "lr": 1e-2, "status": "diverged",
         "test_loss": 1.4e29, "test_miou_2class": math.inf, "test_dice_volume_mean": None, "it_per_s": 1.2},
    ])


def test_a_diverged_row_reads_diverged_and_short(tmp_path):
    paths = write_tables(_results(), tmp_path)
    md = paths["markdown"].read_text()
    assert not re.search(r"\d{8,}", md), "a long run of digits in the Markdown tables"
    row = next(line for line in md.splitlines() if line.startswith("| sgd | resnet34 | diverged |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # Optimizer, Encoder, Status, then paper/ours pairs: Loss, Mean IoU, Dice, Dice/volume (ours only), it/s.
    assert cells[3:] == ["0.012", "1.4e+29", "0.778", "diverged", "0.812", "diverged", "diverged", "6.79", "1.20"]
    # A finished row's tiny loss is scientific, not 0.000; its missing paper cells stay "–".
    assert "| adam | resnet18 | finished | 0.006 | 2.3e-05 | 0.887 | 0.770 |" in md
    assert "| predict nothing (full LGG) |  | baseline | – | – |" in md

    table = pd.read_csv(paths["csv"])  # the CSV stays numeric for programs
    b = table[(table["optimizer"] == "sgd") & (table["encoder"] == "resnet34") & (table["lr"] == 1e-2)].iloc[0]
    assert b["Loss (ours)"] == 1.4e29 and b["Mean IoU (ours)"] == math.inf and pd.isna(b["Dice (ours)"])
