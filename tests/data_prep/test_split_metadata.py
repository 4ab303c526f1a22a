"""The patient split (seeded, disjoint, balanced across institutions) and the metadata cleaning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep import metadata as md
from data_prep.split import split_patients, split_sizes


def _patients(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(f"TCGA_{inst}_{i:04d}", inst) for inst, n in counts.items() for i in range(n)]


LGG_LIKE = {"CS": 14, "DU": 38, "EZ": 3, "FG": 18, "HT": 37}  # 110 patients, as the real institutions


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_disjoint_complete_and_sized(seed):
    pats = _patients(LGG_LIKE)
    sp = split_patients(pats, 0.1, 0.1, seed)
    sets = [set(sp[k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == {p for p, _ in pats}
    assert [len(s) for s in sets] == [88, 11, 11]


def test_split_balanced_across_institutions():
    pats = _patients(LGG_LIKE)
    sp = split_patients(pats, 0.1, 0.1, seed=3)
    for inst, n in LGG_LIKE.items():
        got = {k: sum(p.split("_")[1] == inst for p in sp[k]) for k in sp}
        for k, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            assert abs(got[k] - n * frac) <= 1.0, (inst, got)


def test_split_seeded():
    pats = _patients(LGG_LIKE)
    assert split_patients(pats, seed=5) == split_patients(list(reversed(pats)), seed=5)
    assert split_patients(pats, seed=5) != split_patients(pats, seed=6)


def test_split_sizes_small_and_invalid():
    assert split_sizes(6, 0.1, 0.1) == {"train": 4, "val": 1, "test": 1}
    assert split_sizes(12, 0.2, 0.0) == {"train": 10, "val": 2, "test": 0}
    with pytest.raises(ValueError):
        split_sizes(10, 0.6, 0.5)


def _raw(tmp_path, rows: list[str]) -> pd.DataFrame:
    p = tmp_path / "data.csv"
    p.write_text(",".join(md.CSV_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    raw, problems, _ = md.read_csv(p)
    assert not problems
    return raw


def test_cleaning_mode_median_threshold_and_record(tmp_path):
    empty = "," * 17
    rows = [
        "TCGA_AA_0001,1,2,1,1,1,1,1,1,1,1,1,1,1,30,1,1,0",
        "TCGA_AA_0002,2,2,1,1,1,1,1,1,1,1,1,1,1,40,1,1,1",
        "TCGA_AA_0003,2,,1,1,1,1,1,1,1,1,1,1,2,,1,1,1",
        "TCGA_AA_0004" + empty,
    ]
    raw = _raw(tmp_path, rows)
    assert raw["RNASeqCluster"].dtype == "Int64" and raw["age_at_initial_pathologic"].dtype == "Float64"
    table, rec = md.clean(raw, ["TCGA_AA_0001", "TCGA_AA_0004", "TCGA_AA_0009"], max_missing_frac=0.5)
    byp = table.set_index("Patient")
    assert byp.loc["TCGA_AA_0004", "RNASeqCluster"] == 2  # mode of 1,2,2
    assert byp.loc["TCGA_AA_0004", "age_at_initial_pathologic"] == 35.0  # median of 30,40
    assert byp.loc["TCGA_AA_0003", "MethylationCluster"] == 2
    assert rec["columns"]["RNASeqCluster"] == {"kind": "categorical", "fill": 2, "filled": 2}
    assert rec["columns"]["age_at_initial_pathologic"]["filled"] == 3
    assert rec["incomplete"] == ["TCGA_AA_0004", "TCGA_AA_0009"]
    assert not byp.loc["TCGA_AA_0009", "in_csv"] and byp.loc["TCGA_AA_0009", "has_images"]
    assert not table[md.CSV_COLUMNS].isna().any().any()
    _, rec_all = md.clean(raw, [], max_missing_frac=1.0)
    assert rec_all["incomplete"] == []


def test_numeric_fill_mean_or_median(tmp_path):
    rows = [f"TCGA_AA_000{i},1,2,1,1,1,1,1,1,1,1,1,1,1,{age},1,1,0" for i, age in enumerate((30, 40, 80))]
    raw = _raw(tmp_path, rows + ["TCGA_AA_0009,1,2,1,1,1,1,1,1,1,1,1,1,1,,1,1,0"])
    assert md.clean(raw, [], numeric_fill="median")[1]["columns"]["age_at_initial_pathologic"]["fill"] == 40.0
    assert md.clean(raw, [], numeric_fill="mean")[1]["columns"]["age_at_initial_pathologic"]["fill"] == 50.0


def test_mode_ties_take_the_smallest_code(tmp_path):
    raw = _raw(tmp_path, ["TCGA_AA_0001,3" + "," * 16, "TCGA_AA_0002,1" + "," * 16, "TCGA_AA_0003" + "," * 17])
    table, rec = md.clean(raw, [])
    assert rec["columns"]["RNASeqCluster"]["fill"] == 1
    assert np.isnan(rec["columns"]["gender"]["fill"] or np.nan)  # an all-empty column stays unfilled
