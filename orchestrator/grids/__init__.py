"""Grids are data: one CSV per grid in this folder, one row per training configuration.

A column is any :class:`~orchestrator.config.TrainConfig` field (``encoder``, ``optimizer``, ``lr``, ``epochs``,
``loss``, ``batch_size``, ``max_steps``, ``image_size``, ...); an empty cell keeps the field's default. An
optional ``trial_id`` column names rows; without it a row's id is ``TrainConfig.short_name``
(``resnet50-adam-lr1e-04``), so ids are derived from the configuration, stable across runs, and never
timestamps. Adding a grid is adding a file; ``load_grid`` also accepts a path to a CSV of the same shape.

Cross-validation is not a grid column: ``with_folds(entries, K)`` turns every row into K trials
(``<row id>-fold<k>``), which ``orch sweep --folds K`` schedules. Repeats are not either: ``with_seeds(entries, N)``
turns every trial into N (``<id>-seed<s>``, ``TrainConfig.seed`` = s for s = 0..N-1), which ``orch sweep --seeds N``
schedules; ``expand`` does both. ``config_id`` maps a trial id back to its row.

    >>> entries = load_grid("paper", overrides={"epochs": 2})
    >>> len(entries), entries[0].trial_id
    (45, 'resnet18-adam-lr1e-02')
"""

from __future__ import annotations

import csv
import types
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from orchestrator.config import ConfigError, TrainConfig, check_name

GRID_DIR = Path(__file__).parent
_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


class GridError(ConfigError):
    """A grid that cannot be used: unknown name, bad column or value, duplicate trial ids."""


@dataclass(frozen=True)
class GridEntry:
    """One row of a grid: a stable id and the full training configuration; ``pinned``: the TrainConfig fields the
    row (or an override) set, which ``with_seeds`` must not silently replace."""

    trial_id: str
    config: TrainConfig
    pinned: frozenset[str] = frozenset()


def list_grids() -> list[str]:
    """Names of the grids shipped with orch (the CSV files of this folder but the GPU-share table), sorted."""
    return sorted(p.stem for p in GRID_DIR.glob("*.csv") if p.stem != "gpu_share")


def grid_path(name_or_path: str | Path) -> Path:
    """The CSV file of a grid name (``paper``) or an explicit path; a clear error listing the valid names."""
    p = Path(name_or_path)
    if p.suffix == ".csv" or p.exists():
        if not p.is_file():
            raise GridError(f"grid file {p} does not exist; pass a grid name ({', '.join(list_grids())}) "
                            "or the path of a CSV with one configuration per row")
        return p
    candidate = GRID_DIR / f"{name_or_path}.csv"
    if not candidate.is_file():
        raise GridError(f"unknown grid {str(name_or_path)!r}; valid grids: {', '.join(list_grids())} "
                        "(or the path of a CSV file)")
    return candidate


def _converters() -> dict[str, Any]:
    """Field name -> function turning a CSV cell into the field's type (``int | None`` -> int, ...)."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name, hint in hints.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(
            hint, types.UnionType) or typing.get_origin(hint) is typing.Union else [hint]
        base = args[0] if args else str
        out[name] = _parse_bool if base is bool else base
    return out


def _parse_bool(s: str) -> bool:
    low = s.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{s!r} is not a boolean (true/false)")


def load_grid(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> list[GridEntry]:
    """Read a grid, apply ``overrides`` (TrainConfig field -> value, for every row) and validate every row.

    Raises :class:`GridError` naming the file, row and column for any problem; nothing is half-loaded.
    """
    path = grid_path(name_or_path)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    bad = sorted(set(overrides) - _TRAIN_FIELDS)
    if bad:
        raise GridError(f"override(s) {', '.join(bad)} are not training options; "
                        f"valid: {', '.join(sorted(_TRAIN_FIELDS))}")
    conv = _converters()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        unknown = [c for c in columns if c not in _TRAIN_FIELDS and c != "trial_id"]
        if unknown or "encoder" not in columns:
            raise GridError(f"{path}: unknown column(s) {', '.join(unknown) or '(none)'}"
                            f"{'' if 'encoder' in columns else '; an encoder column is required'}; "
                            f"columns are TrainConfig fields: {', '.join(sorted(_TRAIN_FIELDS))} (and trial_id)")
        raw_rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not raw_rows:
        raise GridError(f"{path}: the grid has no rows")
    entries: list[GridEntry] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(raw_rows, start=2):  # line 1 is the header
        values: dict[str, Any] = {}
        for col, cell in row.items():
            if col == "trial_id" or cell == "":
                continue
            try:
                values[col] = conv[col](cell)
            except ValueError as e:
                raise GridError(f"{path} line {lineno}: column {col}={cell!r} is not valid ({e})") from None
        values.update(overrides)
        try:
            cfg = TrainConfig(**values)
        except ConfigError as e:
            raise GridError(f"{path} line {lineno}: {e}") from None
        trial_id = row.get("trial_id") or cfg.short_name
        try:
            check_name("trial_id", trial_id)
        except ConfigError as e:
            raise GridError(f"{path} line {lineno}: {e}") from None
        if trial_id in seen:
            raise GridError(f"{path} line {lineno}: trial id {trial_id!r} repeats line {seen[trial_id]}; rows "
                            "that differ beyond encoder/optimizer/lr need a trial_id column")
        seen[trial_id] = lineno
        entries.append(GridEntry(trial_id=trial_id, config=cfg, pinned=frozenset(values)))
    return entries


FOLD_SUFFIX = "-fold{}"  # trial id of fold k of a grid row: <row id>-fold<k> (TrainConfig.short_name agrees)


def with_folds(entries: list[GridEntry], folds: int | None) -> list[GridEntry]:
    """Every entry as ``folds`` cross-validation trials, folds of one row together (``None``: unchanged).

    Fold k of row ``r`` is ``GridEntry(f"{r.trial_id}-fold{k}", r.config.replace(folds=folds, fold=k))``."""
    if folds is None:
        half = [e.trial_id for e in entries if e.config.folds is not None and e.config.fold is None]
        if half:
            raise GridError(f"grid row(s) {', '.join(half[:3])} set folds without fold: drop the folds column "
                            "and pass --folds K to cross-validate every row")
        return list(entries)
    if folds < 2:
        raise GridError(f"--folds {folds}: cross-validation needs at least 2 folds (e.g. --folds 5)")
    named = [e.trial_id for e in entries if e.config.folds is not None or e.config.fold is not None]
    if named:
        raise GridError(f"grid row(s) {', '.join(named[:3])} already set folds/fold: leave those columns out of "
                        "the grid and pass --folds K to cross-validate every row")
    return [replace(e, trial_id=e.trial_id + FOLD_SUFFIX.format(k), config=e.config.replace(folds=folds, fold=k))
            for e in entries for k in range(1, folds + 1)]


# Trial id of seed s of a trial: <id>-seed<s> (results_schema.repeat_seed reads it back for results.csv's seed).
SEED_SUFFIX = "-seed{}"


def seed_values(seeds: int) -> range:
    """The seeds of ``--seeds N``: 0..N-1, so seed 0 is ``TrainConfig.seed``'s default (what a run without
    --seeds trains) and ``--seeds 1`` repeats nothing."""
    return range(seeds)


def with_seeds(entries: list[GridEntry], seeds: int | None) -> list[GridEntry]:
    """Every entry as ``seeds`` trials that differ only in ``TrainConfig.seed`` (``None``: unchanged), the seeds
    of one entry together. Seed s of entry ``e`` is ``GridEntry(f"{e.trial_id}-seed{s}", e.config.replace(seed=s))``
    for s in ``seed_values(seeds)``; applied after ``with_folds``, ids read ``<row id>-fold<k>-seed<s>``."""
    if seeds is None:
        return list(entries)
    if seeds < 1:
        raise GridError(f"--seeds {seeds}: give at least 1 seed (e.g. --seeds 3)")
    named = [e.trial_id for e in entries if "seed" in e.pinned]
    if named:
        raise GridError(f"grid row(s) {', '.join(named[:3])} already set seed: leave the seed column out of the "
                        "grid and pass --seeds N to train every row with seeds 0..N-1")
    return [replace(e, trial_id=e.trial_id + SEED_SUFFIX.format(s), config=e.config.replace(seed=s))
            for e in entries for s in seed_values(seeds)]


def expand(entries: list[GridEntry], folds: int | None = None, seeds: int | None = None) -> list[GridEntry]:
    """The trials of a sweep over ``entries``: ``with_seeds(with_folds(entries, folds), seeds)`` (grid order, then
    fold, then seed)."""
    return with_seeds(with_folds(entries, folds), seeds)


def _strip(trial_id: str, suffix: str) -> str:
    return trial_id[: -len(suffix)] if suffix and trial_id.endswith(suffix) else trial_id


def config_id(trial_id: str, fold: int | None, seed: int | None = None) -> str:
    """The grid row id of a trial: ``resnet34-adamw-lr1e-03-fold2-seed1`` (fold 2, seed 1), ``...-fold2`` or
    ``...-seed1`` -> ``resnet34-adamw-lr1e-03``."""
    if seed is not None:
        trial_id = _strip(trial_id, SEED_SUFFIX.format(seed))
    return _strip(trial_id, FOLD_SUFFIX.format(fold)) if fold is not None else trial_id
