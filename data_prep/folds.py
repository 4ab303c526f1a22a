"""Patient-level cross-validation folds over a prepared directory.

``cv_folds`` deals every patient into exactly one of K test folds, seeded and balanced across institutions the
way the prepared split is (``data_prep.split``): institutions in a seeded order, patients shuffled within each,
dealt round-robin with the dealer's position carried from one institution to the next, so fold sizes differ
by at most one and every site is spread over the folds. ``FoldData`` presents fold k of a ``PreparedData`` with
the reader's own interface: ``test`` is fold k, ``val`` a seeded, institution-balanced share of the remaining
patients (the prepared split's ``val_frac``), ``train`` the rest. Cross-validation therefore needs no second
``orch prep``: the shards are the same, only the patient lists change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_prep.split import SPLITS, institution, split_patients


def cv_folds(patients: list[tuple[str, str]], k: int, seed: int = 0) -> list[list[str]]:
    """``[(patient, institution), ...]`` -> ``k`` sorted, disjoint patient lists that cover every patient."""
    if k < 2:
        raise ValueError(f"folds={k}: cross-validation needs at least 2 folds")
    if len(patients) < k:
        raise ValueError(f"folds={k} but only {len(patients)} patients: use at most {len(patients)} folds")
    rng = np.random.default_rng(seed)
    by_inst: dict[str, list[str]] = {}
    for pid, inst in sorted(patients):
        by_inst.setdefault(inst, []).append(pid)
    insts = sorted(by_inst)
    folds: list[list[str]] = [[] for _ in range(k)]
    dealer = int(rng.integers(k))
    for i in rng.permutation(len(insts)):
        members = by_inst[insts[i]]
        for j in rng.permutation(len(members)):
            folds[dealer].append(members[j])
            dealer = (dealer + 1) % k
    return [sorted(f) for f in folds]


def fold_split(patients: list[tuple[str, str]], k: int, fold: int, seed: int = 0,
               val_frac: float = 0.1) -> dict[str, list[str]]:
    """Train/val/test patient lists of ``fold`` (1-based) of ``k``: test = that fold; val = ``val_frac`` of all
    patients, drawn institution-balanced from the others; train = the rest."""
    if not 1 <= fold <= k:
        raise ValueError(f"fold={fold} must lie in 1..{k}")
    test = cv_folds(patients, k, seed)[fold - 1]
    held_out = set(test)
    rest = [(p, i) for p, i in patients if p not in held_out]
    # ~val_frac of all patients, at least one, and at least one left to train on
    n_val = min(max(1, round(val_frac * len(patients))), len(rest) - 1) if val_frac > 0 else 0
    inner = split_patients(rest, val_frac=n_val / len(rest), test_frac=0.0, seed=seed + fold)
    return {"train": inner["train"], "val": inner["val"], "test": test}


class FoldData:
    """Fold ``fold`` of ``folds`` of a ``PreparedData``: the same ``patients(split)`` / ``load(split)`` interface,
    with the fold's patient lists in place of the manifest's split (``split_of`` names a patient's split in it).
    Folds are seeded by the prepared split's seed, so every run over the same prepared directory sees the same
    folds."""

    def __init__(self, data: Any, folds: int, fold: int):
        self.base, self.folds, self.fold = data, folds, fold
        split = data.manifest["split"]
        insts = data.manifest.get("institutions") or {}
        pairs = [(p, insts.get(p, institution(p))) for p in data.patients()]
        self.split = fold_split(pairs, folds, fold, seed=int(split.get("seed", 0)),
                                val_frac=float(split.get("val_frac", 0.1)))

    def __getattr__(self, name: str) -> Any:  # manifest, root, ... of the underlying directory
        return getattr(self.base, name)

    def __repr__(self) -> str:
        return f"FoldData({self.base!r}, fold {self.fold} of {self.folds})"

    def patients(self, split: str | None = None) -> list[str]:
        if split is None:
            return self.base.patients()
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
        return list(self.split[split])

    def split_of(self, patient: str) -> str:
        for s in SPLITS:
            if patient in self.split[s]:
                return s
        raise KeyError(f"patient {patient!r} is not in {self.base.root}")

    def load(self, split: str | None = None, patients: list[str] | None = None, workers: int | None = None):
        chosen = self.patients(split) if split is not None else self.base.patients()
        if patients is not None:
            wanted = set(patients)
            chosen = [p for p in chosen if p in wanted]
        return self.base.load(None, patients=chosen, workers=workers)
