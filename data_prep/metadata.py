"""data.csv: validation, the join with the image folders, and the paper's cleaning (recorded, never silent).

Columns are integer codes except ``age_at_initial_pathologic`` (numeric). Missing values are empty fields.
Cleaning: mode for categorical codes (smallest code on ties, so it is deterministic), median (or mean) for
numeric columns; rows missing more than a threshold fraction of fields are flagged ``incomplete``. Statistics
come from every data.csv row. Images are never dropped because of their metadata.

The header fixes the columns: a row with more or fewer fields than the header is one problem naming its line (a
parser that guessed would shift every value of the file by a column), and ``--skip-invalid`` drops that row only.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.choices import NUMERIC_FILLS
from data_prep.errors import Problem
from data_prep.layout import CSV_COLUMNS

log = logging.getLogger(__name__)

NUMERIC_COLUMNS = ("age_at_initial_pathologic",)
_FIX_CSV = "correct or empty the field in data.csv"


def _read_rows(path: Path, problems: list[Problem]) -> tuple[list[str], list[int], list[list[str]]] | None:
    """``(header, line numbers, rows)`` of data.csv, keeping only rows with the header's field count (a problem
    for each other row); None (and a problem) when the file cannot be read as CSV at all."""
    header: list[str] | None = None
    lines: list[int] = []
    rows: list[list[str]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            start = 1
            for fields in reader:
                line, start = start, reader.line_num + 1
                if not fields:  # a blank line
                    continue
                if header is None:
                    header = fields
                elif len(fields) == len(header):
                    lines.append(line)
                    rows.append(fields)
                else:
                    pid = fields[0].strip() or None
                    problems.append(Problem(
                        str(path), f"line {line}{f' ({pid})' if pid else ''}: {len(fields)} fields, but the header "
                        f"has {len(header)} (a stray or missing comma would shift every value after it)",
                        f"make the row {len(header)} fields long, matching the header, or delete it", scope="csv",
                        patient=pid))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), f"not a readable CSV ({e})", "restore the dataset's data.csv",
                                scope="csv"))
        return None
    if header is None:
        problems.append(Problem(str(path), "empty file: no header", "restore the dataset's data.csv", scope="csv"))
        return None
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        problems.append(Problem(str(path), f"column(s) named twice in the header: {', '.join(dupes)}",
                                "restore the dataset's data.csv header", scope="csv"))
        return None
    return header, lines, rows


def read_csv(path: Path | None) -> tuple[pd.DataFrame, list[Problem], list[str]]:
    """Parse and check data.csv. Returns ``(raw, problems, warnings)``; ``raw`` has one row per valid Patient,
    codes as nullable ``Int64`` and numeric columns as ``Float64``; bad fields are left missing in ``raw``.
    """
    warnings: list[str] = []
    problems: list[Problem] = []
    if path is None:
        return pd.DataFrame({c: pd.Series(dtype="string" if c == "Patient" else "Float64") for c in CSV_COLUMNS}), \
            problems, warnings
    parsed = _read_rows(path, problems)
    if parsed is None:
        return read_csv(None)[0], problems, warnings
    header, lines, rows = parsed
    text = pd.DataFrame(rows, columns=header, dtype=object)
    if "Patient" not in text.columns:
        problems.append(Problem(str(path), f"no 'Patient' column (header: {', '.join(text.columns[:6])} ...)",
                                "restore the dataset's data.csv header", scope="csv"))
        return read_csv(None)[0], problems, warnings
    missing = [c for c in CSV_COLUMNS if c not in text.columns]
    if missing:
        warnings.append(f"{path}: columns missing from the header: {', '.join(missing)}")
    fields = [c for c in text.columns if c != "Patient"]
    raw = pd.DataFrame({"Patient": text["Patient"].str.strip().astype("string")})
    for col in fields:
        numeric = col in NUMERIC_COLUMNS
        vals = pd.to_numeric(text[col].str.strip().replace("", np.nan), errors="coerce")
        bad = text[col].str.strip().ne("") & vals.isna()
        if not numeric:
            nonint = vals.notna() & (vals % 1 != 0)
            bad |= nonint
            vals = vals.where(~nonint)
        for i in np.flatnonzero(bad.to_numpy()):
            pid = raw["Patient"].iloc[i]
            kind = "a number" if numeric else "an integer code"
            problems.append(Problem(str(path), f"line {lines[i]} ({pid}), column {col}: {text[col].iloc[i]!r} is "
                                    f"not {kind}", _FIX_CSV, scope="csv", patient=pid))
        raw[col] = vals.astype("Float64" if numeric else "Int64")
    empty = raw["Patient"].fillna("").eq("")
    for i in np.flatnonzero(empty.to_numpy()):
        problems.append(Problem(str(path), f"line {lines[i]}: empty Patient id", "fill in or delete the row",
                                scope="csv"))
    dup = raw["Patient"].duplicated(keep="first") & ~empty
    for i in np.flatnonzero(dup.to_numpy()):
        pid = raw["Patient"].iloc[i]
        problems.append(Problem(str(path), f"line {lines[i]}: duplicate Patient id {pid}",
                                "keep one row per patient in data.csv", scope="csv", patient=pid))
    raw = raw[~dup & ~empty].reset_index(drop=True)
    return raw, problems, warnings


def join_warnings(raw: pd.DataFrame, image_patients: list[str]) -> tuple[list[str], list[str]]:
    """Patients with images but no CSV row, and CSV rows without images (both only warnings)."""
    in_csv = set(raw["Patient"].dropna())
    no_row = sorted(set(image_patients) - in_csv)
    no_images = sorted(in_csv - set(image_patients))
    return no_row, no_images


def clean(raw: pd.DataFrame, image_patients: list[str], max_missing_frac: float = 0.5,
          numeric_fill: str = "median") -> tuple[pd.DataFrame, dict]:
    """The cleaned table (one row per patient with images or a CSV row) and the imputation record.

    Added columns: ``has_images``, ``in_csv``, ``n_missing`` (fields missing before imputation) and
    ``incomplete`` (``n_missing / n_fields > max_missing_frac``).
    """
    if numeric_fill not in NUMERIC_FILLS:
        raise ValueError(f"numeric_fill={numeric_fill!r}: choose one of {', '.join(NUMERIC_FILLS)}")
    fields = [c for c in raw.columns if c != "Patient"]
    extra = sorted(set(image_patients) - set(raw["Patient"].dropna()))
    table = pd.concat([raw, pd.DataFrame({"Patient": pd.array(extra, dtype="string")})], ignore_index=True)
    for col in fields:
        table[col] = table[col].astype(raw[col].dtype)
    table["in_csv"] = table.index < len(raw)
    table["has_images"] = table["Patient"].isin(set(image_patients))
    table["n_missing"] = table[fields].isna().sum(axis=1).astype("int64")
    table["incomplete"] = table["n_missing"] > max_missing_frac * max(len(fields), 1)
    record: dict = {"policy": f"mode for categorical codes, {numeric_fill} for numeric columns",
                    "max_missing_frac": max_missing_frac, "columns": {}}
    for col in fields:
        observed = raw[col].dropna()
        n_fill = int(table[col].isna().sum())
        if col in NUMERIC_COLUMNS:
            kind = "numeric"
            value = None if observed.empty else float(getattr(observed.astype(float), numeric_fill)())
        else:
            kind = "categorical"
            value = None if observed.empty else int(observed.astype(int).mode().min())
        if value is not None:
            table[col] = table[col].fillna(value)
        record["columns"][col] = {"kind": kind, "fill": value, "filled": n_fill if value is not None else 0}
    record["incomplete"] = sorted(table.loc[table["incomplete"], "Patient"].tolist())
    record["imputed_patients"] = sorted(table.loc[table["n_missing"] > 0, "Patient"].tolist())
    return table.sort_values("Patient").reset_index(drop=True), record
