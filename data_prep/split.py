"""Seeded patient-level split, balanced across source institutions (the ``<INST>`` of ``TCGA_<INST>_<ID>``).

No patient is ever in two splits: the unit of assignment is the patient. Split sizes follow the fractions over
all patients (largest remainder); each institution's share of every split follows its own size as closely as
those totals allow, so a site's scanner style is not concentrated in one split.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")
FEW_PATIENTS = 5  # a validation or test split below this many patients gives figures one patient can swing


def split_sizes(n: int, val_frac: float, test_frac: float) -> dict[str, int]:
    """Patients per split. With 3+ patients, a split with a non-zero fraction gets at least one."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac={val_frac}, test_frac={test_frac}: each in [0, 1) and their sum below 1")
    fracs = {"train": 1 - val_frac - test_frac, "val": val_frac, "test": test_frac}
    exact = {k: n * f for k, f in fracs.items()}
    sizes = {k: int(np.floor(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (sizes[k] - exact[k], SPLITS.index(k)))[: n - sum(sizes.values())]:
        sizes[k] += 1
    if n >= 3:
        for k in ("val", "test"):
            if fracs[k] > 0 and sizes[k] == 0:
                sizes[k] = 1
                sizes["train"] -= 1
    return sizes


def split_patients(patients: list[tuple[str, str]], val_frac: float = 0.1, test_frac: float = 0.1,
                   seed: int = 0) -> dict[str, list[str]]:
    """Assign ``[(patient, institution), ...]`` to train/val/test; returns sorted patient lists per split.

    Greedy, deterministic for a seed: institutions in a seeded order, patients shuffled within each; every
    patient goes to the split with the largest remaining deficit for its institution (ties: the largest overall
    deficit), among splits that still have room.
    """
    n = len(patients)
    sizes = split_sizes(n, val_frac, test_frac)
    fracs = {k: sizes[k] / n if n else 0 for k in SPLITS}
    rng = np.random.default_rng(seed)
    by_inst: dict[str, list[str]] = {}
    for pid, inst in sorted(patients):
        by_inst.setdefault(inst, []).append(pid)
    insts = sorted(by_inst)
    order = [insts[i] for i in rng.permutation(len(insts))]
    room = dict(sizes)
    out: dict[str, list[str]] = {k: [] for k in SPLITS}
    for inst in order:
        members = [by_inst[inst][i] for i in rng.permutation(len(by_inst[inst]))]
        got = {k: 0 for k in SPLITS}
        for j, pid in enumerate(members):
            open_ = [k for k in SPLITS if room[k] > 0]
            # deficit after this patient: where this institution is furthest below its proportional share
            best = max(open_, key=lambda k: (fracs[k] * (j + 1) - got[k], room[k] / max(sizes[k], 1),
                                             -SPLITS.index(k)))
            out[best].append(pid)
            got[best] += 1
            room[best] -= 1
    return {k: sorted(v) for k, v in out.items()}


def institution(patient: str) -> str:
    """``TCGA_CS_4941`` -> ``CS``."""
    parts = patient.split("_")
    return parts[1] if len(parts) > 1 else ""


def small_split_warning(split: dict[str, list[str]]) -> str | None:
    """A warning (with what to do) when the validation or test split holds 1 to ``FEW_PATIENTS - 1`` patients:
    the best epoch is then chosen, and the model scored, on a handful of patients. None otherwise."""
    few = {k: len(split.get(k, ())) for k in ("val", "test") if 0 < len(split.get(k, ())) < FEW_PATIENTS}
    if not few:
        return None
    sizes = " and ".join(f"{n} {'validation' if k == 'val' else 'test'} patient{'s' if n > 1 else ''}"
                         for k, n in few.items())
    return (f"warning: only {sizes}: the best epoch is picked and the Dice reported on so few patients that one "
            "patient's result moves the figure; do not compare configurations on it. Cross-validate instead "
            "(orch train --folds 5, orch sweep --folds 5: every patient is tested once), or prepare more patients "
            "(or raise --val-frac / --test-frac)")
