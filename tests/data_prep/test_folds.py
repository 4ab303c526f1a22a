"""Patient-level cross-validation folds: disjoint, covering, balanced in size and across institutions, seeded."""

from __future__ import annotations

from collections import Counter

import pytest

from data_prep.folds import FoldData, cv_folds, fold_split

# An LGG-like mix of institutions (110 patients, one site with a single patient).
SITES = {"CS": 16, "DU": 45, "EZ": 1, "FG": 17, "HT": 31}
PATIENTS = [(f"TCGA_{inst}_{i:04d}", inst) for inst, n in SITES.items() for i in range(n)]


@pytest.mark.parametrize("k", [2, 5, 10])
def test_folds_are_disjoint_cover_everyone_and_differ_in_size_by_at_most_one(k):
    folds = cv_folds(PATIENTS, k, seed=0)
    assert len(folds) == k
    flat = [p for f in folds for p in f]
    assert len(flat) == len(set(flat)) == len(PATIENTS)
    assert set(flat) == {p for p, _ in PATIENTS}
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    assert all(f == sorted(f) for f in folds)


def test_every_institution_is_spread_over_the_folds():
    k = 5
    folds = cv_folds(PATIENTS, k, seed=1)
    for inst, n in SITES.items():
        per_fold = [sum(1 for p in f if p.split("_")[1] == inst) for f in folds]
        assert sum(per_fold) == n
        assert max(per_fold) - min(per_fold) <= 1, (inst, per_fold)  # DU's 45 patients: 9 in every fold


def test_folds_are_seeded():
    assert cv_folds(PATIENTS, 5, seed=7) == cv_folds(list(reversed(PATIENTS)), 5, seed=7)  # input order is irrelevant
    assert cv_folds(PATIENTS, 5, seed=7) != cv_folds(PATIENTS, 5, seed=8)


def test_bad_fold_counts_fail_with_the_limits():
    with pytest.raises(ValueError, match="at least 2 folds"):
        cv_folds(PATIENTS, 1)
    with pytest.raises(ValueError, match="only 3 patients"):
        cv_folds(PATIENTS[:3], 4)
    with pytest.raises(ValueError, match="must lie in 1..5"):
        fold_split(PATIENTS, 5, 6)


def test_fold_split_tests_the_fold_and_draws_val_from_the_rest():
    k = 5
    folds = cv_folds(PATIENTS, k, seed=3)
    for fold in range(1, k + 1):
        s = fold_split(PATIENTS, k, fold, seed=3, val_frac=0.1)
        assert s["test"] == folds[fold - 1]
        assert not (set(s["train"]) & set(s["val"]) or set(s["train"]) & set(s["test"])
                    or set(s["val"]) & set(s["test"]))
        assert len(s["train"]) + len(s["val"]) + len(s["test"]) == len(PATIENTS)
        assert abs(len(s["val"]) - 11) <= 1  # ~10 % of all 110 patients
        assert len(Counter(p.split("_")[1] for p in s["val"])) >= 3  # not one site's patients
        assert s == fold_split(PATIENTS, k, fold, seed=3, val_frac=0.1)


class _Prepared:
    """The part of PreparedData that FoldData uses."""

    def __init__(self):
        self.manifest = {"split": {"seed": 4, "val_frac": 0.1, "train": [], "val": [], "test": []},
                         "institutions": {}}
        self.root = "prepared"
        self.loaded = None

    def patients(self, split=None):
        return sorted(p for p, _ in PATIENTS)

    def load(self, split=None, patients=None, workers=None):
        self.loaded = (split, patients)
        return patients


def test_fold_data_presents_the_fold_as_the_split():
    base = _Prepared()
    data = FoldData(base, 5, 2)
    expected = fold_split(PATIENTS, 5, 2, seed=4, val_frac=0.1)
    assert {s: data.patients(s) for s in ("train", "val", "test")} == expected
    assert data.patients() == base.patients()
    assert data.split_of(expected["test"][0]) == "test" and data.split_of(expected["val"][0]) == "val"
    assert data.load("test") == expected["test"] and base.loaded == (None, expected["test"])
    assert data.manifest is base.manifest  # everything else is the prepared directory's
