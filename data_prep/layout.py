"""Finding the patients of an LGG tree on disk, whatever the depth, without counting any patient twice.

The real public copies hold ``kaggle_3m/`` (sometimes twice: ``kaggle_3m/`` and
``lgg-mri-segmentation/kaggle_3m/``), a ``data.csv`` per copy, and stray ``README.md`` / ``.DS_Store`` files.
Slices are numbered 1..N; they are sorted numerically (``_2`` before ``_10``), never lexically.
Walks never follow a symlinked folder (so a link cannot loop the walk); a link that loops or points nowhere is a
listed problem, not a traceback.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.errors import PrepError, Problem

log = logging.getLogger(__name__)

CSV_NAME = "data.csv"
CSV_COLUMNS = [
    "Patient", "RNASeqCluster", "MethylationCluster", "miRNACluster", "CNCluster", "RPPACluster",
    "OncosignCluster", "COCCluster", "histological_type", "neoplasm_histologic_grade", "tumor_tissue_site",
    "laterality", "tumor_location", "gender", "age_at_initial_pathologic", "race", "ethnicity", "death01",
]
# TCGA_<INST>_<ID>_<YYYYMMDD>; IDs can hold letters (TCGA_HT_A61B_19991127).
PATIENT_DIR_RE = re.compile(r"^TCGA_([A-Za-z0-9]+)_([A-Za-z0-9]+)_(\d{8})$")
_SLICE_RE = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)
MASK_SUFFIXES = ("_mask.tif", "_mask.tiff")
# Files that public copies carry and that mean nothing to prep.
_IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


def _ignored(name: str) -> bool:
    low = name.lower()
    return low in _IGNORED_NAMES or low.startswith("readme") or name.startswith("._")


@dataclass(frozen=True)
class SliceName:
    """An LGG slice file name taken apart: ``<stem>_<n>.tif`` (an image) or ``<stem>_<n>_mask.tif`` (its mask)."""

    stem: str
    n: int
    mask: bool


def parse_slice_name(name: str) -> SliceName | None:
    """``TCGA_CS_4941_19960909_12_mask.tif`` -> ``SliceName("TCGA_CS_4941_19960909", 12, mask=True)``; None for a
    name of any other form. Suffixes in any case (``.tif``, ``.TIFF``); ``n`` is a number, so slices sort
    numerically. The one parser of slice names: prep, ``orch predict`` and ``orch evaluate`` all read them here."""
    m = _SLICE_RE.match(name)
    if m is None:
        return None
    return SliceName(m.group("stem"), int(m.group("n")), m.group("mask") is not None)


def is_mask_name(name: str) -> bool:
    """True for any ``..._mask.tif`` / ``..._mask.tiff`` file name (any case), numbered or not."""
    return name.lower().endswith(MASK_SUFFIXES)


@dataclass(frozen=True)
class SliceSource:
    """One slice: its number (1-based, as in the file name) and the image/mask paths (None when missing)."""

    n: int
    image: Path | None
    mask: Path | None


@dataclass
class PatientSource:
    """One patient folder: ``patient`` = first three ``_`` tokens of ``folder`` (the data.csv key)."""

    patient: str
    institution: str
    folder: Path
    slices: list[SliceSource] = field(default_factory=list)


@dataclass
class Layout:
    """What :func:`discover` found. ``problems`` are errors (validation), ``warnings`` are only reported."""

    root: Path
    patients: list[PatientSource]
    csv_path: Path | None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # folders skipped as identical second copies
    ignored: list[str] = field(default_factory=list)  # stray files left out (README, .DS_Store, ...)


def patient_id(folder_name: str) -> str:
    """``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941`` (the data.csv ``Patient`` key)."""
    return "_".join(folder_name.split("_")[:3])


def _broken_link(path: str) -> str | None:
    """What is wrong with ``path`` when it is a symlink that cannot be followed (a loop, a missing target)."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink that loops (it leads back to itself)"
        return f"a symlink whose target cannot be reached ({e.strerror or e}: {os.readlink(path)})"
    return None


_FIX_LINK = "remove the link or point it at the real file or folder"


def discover(source: str | os.PathLike) -> Layout:
    """Walk ``source`` (a ``kaggle_3m`` folder or any parent of it) and list patients, slices and data.csv."""
    root = Path(source)
    why = _broken_link(str(root))
    if why:
        raise PrepError(f"source {root} is {why}: pass the real kaggle_3m folder (or a folder above it)")
    if not root.exists():
        raise PrepError(f"source {root} does not exist: pass the kaggle_3m folder (or a folder above it)")
    if not root.is_dir():
        raise PrepError(f"source {root} is not a folder: pass the kaggle_3m folder (or a folder above it)")
    folders: list[Path] = []
    csvs: list[Path] = []
    lay = Layout(root=root, patients=[], csv_path=None)
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a linked folder is never entered
        dirnames.sort()
        here = Path(dirpath)
        keep = []
        for d in dirnames:
            if PATIENT_DIR_RE.match(d):
                folders.append(here / d)  # a patient folder (linked or not): scanned, never walked into
            elif d.startswith(".") or d == "__MACOSX":  # macOS zip residue mirrors the tree
                continue
            elif os.path.islink(here / d):
                lay.warnings.append(f"{here / d}: a symlink to a folder; not followed (links could loop the walk): "
                                    "pass the real folder as SOURCE if it holds data")
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            why = _broken_link(str(here / f))  # os.walk lists a looping or dangling link as a file
            if why:
                pid = patient_id(f) if PATIENT_DIR_RE.match(f) else None
                lay.problems.append(Problem(str(here / f), why, _FIX_LINK,
                                            scope="patient" if pid else "csv" if f == CSV_NAME else "file",
                                            patient=pid))
            elif f == CSV_NAME:
                csvs.append(here / f)
    chosen = _dedupe_folders(folders, lay)
    for folder in chosen:
        lay.patients.append(_scan_patient(folder, lay))
    lay.patients.sort(key=lambda p: p.patient)
    lay.csv_path = _choose_csv(csvs, chosen, lay)
    if not lay.patients:
        raise PrepError(
            f"no patient folders (TCGA_<INST>_<ID>_<YYYYMMDD>) found under {root}: pass the kaggle_3m folder "
            "of the LGG dataset or a folder above it (or try `orch synth OUT` for a synthetic one)"
        )
    return lay


def _is_file(e: os.DirEntry) -> bool:
    try:
        return e.is_file()
    except OSError:  # a looping link: reported by _scan_patient
        return False


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((e.name, e.stat().st_size) for e in os.scandir(folder) if _is_file(e) and not _ignored(e.name))


def _dedupe_folders(folders: list[Path], lay: Layout) -> list[Path]:
    """Keep one folder per patient id: the shallowest copy. An identical second copy (same file names and
    sizes) is skipped quietly; a differing one, or two scan dates for one patient, is a problem."""
    by_pid: dict[str, list[Path]] = {}
    for f in folders:
        by_pid.setdefault(patient_id(f.name), []).append(f)
    chosen = []
    for pid, group in sorted(by_pid.items()):
        group.sort(key=lambda p: (len(p.parts), str(p)))
        first = group[0]
        chosen.append(first)
        for other in group[1:]:
            if other.name == first.name and _listing(other) == _listing(first):
                lay.duplicates.append(str(other))
                log.info("skipping %s: identical copy of %s", other, first)
            else:
                lay.problems.append(Problem(
                    str(other), f"a second, different folder for patient {pid} (the first is {first})",
                    "keep one copy of each patient and remove the other", scope="patient", patient=pid))
    return chosen


def _scan_patient(folder: Path, lay: Layout) -> PatientSource:
    m = PATIENT_DIR_RE.match(folder.name)
    assert m is not None
    pat = PatientSource(patient_id(folder.name), m.group(1), folder)
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    expected = f"expected {folder.name}_<n>.tif (image) or {folder.name}_<n>_mask.tif (its mask), n = 1, 2, ..."
    for e in sorted(os.scandir(folder), key=lambda e: e.name):
        name = e.name
        sm = parse_slice_name(name)
        why = _broken_link(e.path)
        if why:
            n = sm.n if sm and sm.stem == folder.name else None
            lay.problems.append(Problem(e.path, why, _FIX_LINK, scope="file" if n is None else "slice",
                                        patient=pat.patient, slice=n))
            continue
        if _ignored(name) or e.is_dir():
            if not e.is_dir():
                lay.ignored.append(e.path)
            continue
        own_name = name.startswith((f"{folder.name}_", f"{folder.name}."))
        if own_name and name.lower().endswith((".tif", ".tiff")) and (sm is None or sm.stem != folder.name):
            # TCGA_CS_4941_19960909_.tif, ..._abc.tif, ...19960909.tif, ..._mask.tif: the slice number is missing
            lay.problems.append(Problem(e.path, f"no slice number in the file name: {expected}",
                                        "rename it with its slice number, or move it out of the patient folder",
                                        scope="file", patient=pat.patient))
            continue
        if sm is None:
            lay.ignored.append(e.path)
            lay.warnings.append(f"{e.path}: not a slice or mask file name; ignored")
            continue
        if sm.stem != folder.name:
            stem = sm.stem
            what = (f"file is named for another scan ({stem}) than its folder {folder.name}"
                    if PATIENT_DIR_RE.match(stem) else
                    f"file name does not start with its folder's name {folder.name}: {expected}")
            lay.problems.append(Problem(e.path, what, "move it into its own patient folder, rename it, or delete it",
                                        patient=pat.patient, slice=sm.n))
            continue
        (masks if sm.mask else images)[sm.n] = Path(e.path)
    for n in sorted(set(images) | set(masks)):  # numeric order: 2 before 10
        img, msk = images.get(n), masks.get(n)
        if img is None:
            lay.problems.append(Problem(str(msk), "mask without its image",
                                        f"add {folder.name}_{n}.tif or delete the mask", patient=pat.patient, slice=n))
        elif msk is None:
            lay.problems.append(Problem(str(img), "mask file missing",
                                        f"add {folder.name}_{n}_mask.tif (256x256, 0/255) beside it",
                                        patient=pat.patient, slice=n))
        pat.slices.append(SliceSource(n, img, msk))
    numbers = [s.n for s in pat.slices]
    if not numbers:
        lay.problems.append(Problem(str(folder), "patient folder holds no slices",
                                    "delete the empty folder or restore its files", scope="patient",
                                    patient=pat.patient))
    elif numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        lay.warnings.append(f"{folder}: slice numbers are not 1..N without gaps (missing {missing[:10]})")
    return pat


def _choose_csv(csvs: list[Path], chosen: list[Path], lay: Layout) -> Path | None:
    """Prefer the data.csv beside the patient folders; identical copies elsewhere are fine, differing ones not."""
    if not csvs:
        lay.problems.append(Problem(
            str(lay.root / CSV_NAME), "no data.csv found", "put the dataset's data.csv beside the patient folders",
            scope="csv"))
        return None
    parents = {f.parent for f in chosen}
    csvs = sorted(csvs, key=lambda p: (p.parent not in parents, len(p.parts), str(p)))
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in csvs}
    for other in csvs[1:]:
        if digest[other] != digest[csvs[0]]:
            lay.problems.append(Problem(
                str(other), f"differs from {csvs[0]}, which is used",
                "keep one data.csv (or make the copies identical)", scope="csv"))
    return csvs[0]
