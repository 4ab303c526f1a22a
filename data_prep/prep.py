"""``orch prep SOURCE OUT``: LGG TIFF slices + data.csv -> validated, split, sharded HDF5 and a manifest.

Two passes over the source, both parallel over patients:

1. validate: decode every slice, check formats, digest the content; collect every problem (nothing written).
2. write: one shard per patient (``shards/<patient>.h5``), reusing a shard already in OUT when it was built from
   the same content and verifies; then the metadata tables, and the manifest last.

Every file lands by temp file + rename, so a run killed at any moment (kill -9) leaves either nothing or
complete shards; the next run reuses those and produces the same output (byte-identical for reused shards;
a rebuilt lzf shard holds the same data, see :mod:`data_prep.shards`). OUT is locked for the whole run,
and only files orch wrote there are ever replaced or removed (:mod:`data_prep.outdir`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data_prep import metadata as md
from data_prep import outdir
from data_prep.atomic import atomic_write
from data_prep.errors import PrepError, Problem, ValidationFailed
from data_prep.layout import Layout, PatientSource, discover
from data_prep.outdir import MANIFEST, METADATA, METADATA_RAW
from data_prep.passes import ProgressFn, Scan, build_shard, run_tasks, scan_patient
from data_prep.shards import (
    FORMAT_VERSION,
    SHARD_DIR,
    check_compression,
    file_sha256,
    shard_name,
)
from data_prep.split import small_split_warning, split_patients, split_sizes
from data_prep.tiffs import IMAGE_SHAPE, MASK_SHAPE

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepOptions:
    """Everything that shapes a prep run. Output depends on all fields except ``workers`` and ``force``."""

    val_frac: float = 0.1
    test_frac: float = 0.1
    split_seed: int = 0
    skip_invalid: bool = False
    workers: int = 2
    max_missing_frac: float = 0.5  # rows missing more than this fraction of fields are flagged incomplete
    numeric_fill: str = "median"  # or "mean", for numeric metadata columns
    compression: str = "lzf"  # or "gzip" (with compression_level); see BENCHMARKS.md "Data prep"
    compression_level: int | None = None
    force: bool = False  # OUT may hold files orch did not write: write beside them (they are never touched)

    def check(self) -> None:
        """Raise ValueError naming the bad field and its valid values."""
        split_sizes(10, self.val_frac, self.test_frac)
        check_compression(self.compression, self.compression_level)
        if not 0 <= self.max_missing_frac <= 1:
            raise ValueError(f"max_missing_frac={self.max_missing_frac}: must be in [0, 1]")
        if self.numeric_fill not in md.NUMERIC_FILLS:
            raise ValueError(f"numeric_fill={self.numeric_fill!r}: choose one of {', '.join(md.NUMERIC_FILLS)}")
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: need at least 1")


def _resolve(path: str | os.PathLike, what: str) -> Path:
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
        raise PrepError(f"{what} {path}: cannot be resolved ({e}); a symlink on the way loops or is broken: "
                        "pass the real folder") from e


def prepare(source: str | os.PathLike, out: str | os.PathLike, options: PrepOptions | None = None,
            progress: ProgressFn | None = None, **overrides) -> dict:
    """Validate ``source`` (an LGG tree) and write the prepared directory ``out``; returns the manifest.

    ``overrides`` are :class:`PrepOptions` fields (``prepare(src, out, workers=1)``). Raises
    :class:`~data_prep.errors.ValidationFailed` listing every problem (and writes nothing) unless
    ``skip_invalid``, which instead leaves the bad slices out and records them in ``manifest["excluded"]``.
    Raises :class:`~data_prep.errors.PrepError` before any work when OUT holds files orch did not write (unless
    ``force``) or another prep is writing it.
    """
    try:
        opts = dataclasses.replace(options or PrepOptions(), **overrides)
        opts.check()
    except (TypeError, ValueError) as e:
        raise PrepError(str(e)) from e
    source, out = _resolve(source, "source"), _resolve(out, "OUT")
    if out.exists() and not out.is_dir():
        raise PrepError(f"OUT {out} exists and is not a folder: choose a new or existing folder for the output")
    with contextlib.ExitStack() as stack:
        found = outdir.survey(out)
        # OUT already orch's (or being made so: the lock file comes first): lock now, so that a concurrent run is
        # refused before minutes of validation and what is seen is not another run's work in progress.
        locked = found.kind == "orch" or (out / outdir.LOCK).exists()
        if locked:
            stack.enter_context(outdir.hold_lock(out))
            found = outdir.survey(out)
        outdir.check_usable(found, opts.force)
        outdir.check_conflicts(found, [METADATA_RAW, METADATA, MANIFEST])  # the shards' names come with the source
        return _prepare(source, out, opts, progress, stack, locked)


@dataclass
class _Validated:
    """Pass 1's outcome: the source as found, every patient scanned, the patients kept, what is reported."""

    lay: Layout
    raw: pd.DataFrame  # data.csv as read
    scans: list[Scan]
    kept: list[tuple[PatientSource, Scan]]
    problems: list[Problem]  # excluded (``skip_invalid``): recorded in the manifest
    warnings: list[str]


@dataclass
class _Plan:
    """What is decided before OUT is touched: the kept patients' metadata table and their split."""

    table: pd.DataFrame
    imputation: dict
    no_row: list[str]  # patients with images but no data.csv row
    no_images: list[str]  # data.csv rows without images
    split: dict[str, list[str]]


def _prepare(source: Path, out: Path, opts: PrepOptions, progress: ProgressFn | None, stack: contextlib.ExitStack,
             locked: bool) -> dict:
    """Pass 1 (validate, decide), then pass 2 (write) under OUT's lock; returns the manifest written last."""
    found = _validate(source, out, opts, progress)
    plan = _plan(found, opts)
    shard_files = [f"{SHARD_DIR}/{shard_name(p.patient)}" for p, _ in found.kept]
    planned = [*shard_files, METADATA_RAW, METADATA, MANIFEST]
    survey, old = _claim_out(out, opts, stack, locked, planned)
    built = _write_shards(out, found.kept, shard_files, old, opts, progress)
    for rel in outdir.remove_stale(survey, shard_files):
        log.info("removed %s: its patient is no longer prepared", rel)
    atomic_write(out / METADATA_RAW, lambda t: found.raw.to_parquet(t, index=False))
    atomic_write(out / METADATA, lambda t: plan.table.to_parquet(t, index=False))
    manifest = _manifest(source, found, plan, built, opts)
    atomic_write(out / MANIFEST, lambda t: t.write_text(json.dumps(manifest, indent=1) + "\n"))
    outdir.write_journal(out, planned)
    reused = sum(b["reused"] for b in built)
    log.info("prepared %d patients (%d shards reused) into %s", len(found.kept), reused, out)
    return manifest


def _validate(source: Path, out: Path, opts: PrepOptions, progress: ProgressFn | None) -> _Validated:
    """Pass 1: find the patients, read data.csv, decode every slice. Raise :class:`ValidationFailed` listing every
    problem unless ``skip_invalid`` (then the bad slices are left out and logged)."""
    lay = discover(source)
    raw, csv_problems, csv_warnings = md.read_csv(lay.csv_path)
    salt = f"v{FORMAT_VERSION}:{opts.compression}:{opts.compression_level}"
    scans: list[Scan] = run_tasks(scan_patient, [(p, salt) for p in lay.patients], opts.workers, "validate", progress)
    problems = lay.problems + csv_problems + [p for s in scans for p in s.problems]
    problems.sort(key=lambda p: (p.scope == "csv", p.patient or "", p.slice or 0, p.path))  # slices in order
    if problems and not opts.skip_invalid:
        raise ValidationFailed(problems, str(source), str(out))
    kept = [(p, s) for p, s in zip(lay.patients, scans) if s.good]
    if not kept:
        raise PrepError(f"no valid slice left under {source}: every slice has a problem (see above)")
    _log_list("excluded (--skip-invalid)", [str(p) for p in problems])
    return _Validated(lay, raw, scans, kept, problems, lay.warnings + csv_warnings)


def _plan(found: _Validated, opts: PrepOptions) -> _Plan:
    """Join data.csv to the kept patients (adding its warnings to ``found.warnings``), impute it, split them."""
    ids = [p.patient for p, _ in found.kept]
    no_row, no_images = md.join_warnings(found.raw, ids)
    if no_row:
        found.warnings.append(f"{len(no_row)} patient(s) have images but no row in data.csv (their metadata is "
                              f"imputed): {_few(no_row)}")
    if no_images:
        found.warnings.append(f"{len(no_images)} data.csv row(s) have no images (kept in the metadata table only): "
                              f"{_few(no_images)}")
    _log_list("warning", found.warnings)
    table, imputation = md.clean(found.raw, ids, opts.max_missing_frac, opts.numeric_fill)
    split = split_patients([(p.patient, p.institution) for p, _ in found.kept], opts.val_frac, opts.test_frac,
                           opts.split_seed)
    return _Plan(table, imputation, no_row, no_images, split)


def _claim_out(out: Path, opts: PrepOptions, stack: contextlib.ExitStack, locked: bool,
               planned: list[str]) -> tuple[outdir.Survey, dict[str, str]]:
    """Pass 2 begins: only now is OUT touched, under its lock, and only files orch wrote are replaced. Create and
    lock OUT, check it again, journal the ``planned`` files, clear killed runs' temporaries; returns the survey
    and the previous manifest's ``{shard file: sha256}``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepError(f"cannot create OUT {out} ({e.strerror or e}): choose a folder you can write") from e
    if not locked:
        stack.enter_context(outdir.hold_lock(out))
    found = outdir.survey(out)  # again, under the lock: what another run may have left meanwhile
    outdir.check_usable(found, opts.force)
    outdir.check_conflicts(found, planned)
    outdir.write_journal(out, (found.owned - {outdir.JOURNAL}) | set(planned))  # before anything changes
    (out / SHARD_DIR).mkdir(exist_ok=True)
    old = _read_old_manifest(out)
    outdir.remove_temps(found, planned)
    return found, old


def _write_shards(out: Path, kept: list[tuple[PatientSource, Scan]], shard_files: list[str], old: dict[str, str],
                  opts: PrepOptions, progress: ProgressFn | None) -> list[dict]:
    """One shard per kept patient, reused where sound (:func:`build_shard`); ``[{sha256, bytes, reused}, ...]``."""
    tasks = [(pat, scan.good, scan.digest, out / rel, old.get(rel), opts.compression, opts.compression_level)
             for (pat, scan), rel in zip(kept, shard_files)]
    return run_tasks(build_shard, tasks, opts.workers, "write", progress)


def _manifest(source: Path, found: _Validated, plan: _Plan, built: list[dict], opts: PrepOptions) -> dict:
    """manifest.json's content: what was prepared, how, from what, and what was left out or warned about."""
    kept, lay = found.kept, found.lay
    shards = [{"file": f"{SHARD_DIR}/{shard_name(pat.patient)}", "sha256": b["sha256"], "patients": [pat.patient],
               "slices": len(scan.good), "tumour_slices": int(np.count_nonzero(scan.tumour_pixels)),
               "bytes": b["bytes"]}
              for (pat, scan), b in zip(kept, built)]
    return {
        "format_version": FORMAT_VERSION,
        "patients": len(kept),
        "slices": sum(s["slices"] for s in shards),
        "tumour_slices": sum(s["tumour_slices"] for s in shards),
        "tumour_pixels": int(sum(sum(s.tumour_pixels) for _, s in kept)),
        "image_shape": list(IMAGE_SHAPE),
        "mask_shape": list(MASK_SHAPE),
        "shards": shards,
        "split": {"seed": opts.split_seed, "val_frac": opts.val_frac, "test_frac": opts.test_frac, **plan.split},
        "institutions": {p.patient: p.institution for p, _ in kept},
        "excluded": [p.to_excluded() for p in found.problems],
        "warnings": found.warnings,
        "duplicates_skipped": lay.duplicates,
        "ignored_files": lay.ignored,
        "source": _source_record(source, lay, found.scans),
        "metadata": {"file": METADATA, "raw_file": METADATA_RAW, "patients_without_csv_row": plan.no_row,
                     "csv_rows_without_images": plan.no_images, **plan.imputation},
        "storage": {"compression": opts.compression, "compression_level": opts.compression_level,
                    "chunks": "one slice per chunk", "fletcher32": True},
        "bytes_out": sum(s["bytes"] for s in shards),
    }


def _source_record(source: Path, lay: Layout, scans: list[Scan]) -> dict:
    """The manifest's ``source``: where the data came from, data.csv's checksum, the bytes read."""
    csv = lay.csv_path
    return {
        "path": str(source),
        "data_csv": str(csv) if csv else None,
        "data_csv_sha256": file_sha256(csv) if csv else None,
        "bytes": sum(s.bytes_in for s in scans) + (csv.stat().st_size if csv else 0),
    }


def describe(manifest: dict, seconds: float, workers: int) -> str:
    """What ``orch prep`` reports of a run (``manifest`` as :func:`prepare` returns it): counts, the split, what was
    left out or imputed, bytes in and out; a warning when the validation or test split is too small to trust."""
    m, sp = manifest, manifest["split"]
    prepared = set(m["institutions"])  # the prepared patients (data.csv may list more)
    imputed = [p for p in m["metadata"]["imputed_patients"] if p in prepared]
    incomplete = [p for p in m["metadata"]["incomplete"] if p in prepared]
    b_in, b_out = m["source"]["bytes"], m["bytes_out"]
    return (
        f"prepared {m['patients']} patients, {m['slices']} slices ({m['tumour_slices']} with tumour) "
        f"in {seconds:.1f} s with {workers} worker(s)\n"
        f"  split (seed {sp['seed']}): {len(sp['train'])} train / {len(sp['val'])} val / {len(sp['test'])} test "
        f"patients\n"
        f"  excluded: {len(m['excluded'])}; warnings: {len(m['warnings'])} (both listed in manifest.json); "
        f"metadata imputed for {len(imputed)} patient(s), {len(incomplete)} flagged incomplete\n"
        f"  bytes in {_mb(b_in)}, out {_mb(b_out)} ({b_out / max(b_in, 1):.2f}x)"
    ) + (f"\n  {few}" if (few := small_split_warning(sp)) else "")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _read_old_manifest(out: Path) -> dict[str, str]:
    """``{shard file: sha256}`` of a previous complete run in ``out``, then remove that manifest: from here on the
    shards may change, and a manifest must never describe shards it does not match. (Only called once
    :func:`outdir.check_conflicts` has made sure a manifest there is orch's.)"""
    path = out / MANIFEST
    if not path.exists():
        return {}
    try:
        old = {s["file"]: s["sha256"] for s in json.loads(path.read_text()).get("shards", [])
               if isinstance(s.get("file"), str) and isinstance(s.get("sha256"), str)}
    except (ValueError, KeyError, TypeError, AttributeError):
        old = {}
    path.unlink()
    return old


def _log_list(what: str, lines: list[str], limit: int = 20) -> None:
    for line in lines[:limit]:
        log.warning("%s: %s", what, line)
    if len(lines) > limit:
        log.warning("... %d more (all in manifest.json)", len(lines) - limit)


def _few(items: list[str], k: int = 5) -> str:
    return ", ".join(items[:k]) + (f" ... (all {len(items)} in manifest.json 'metadata')" if len(items) > k else "")
