"""How a person reads a metric: one formatter for every table, log line and summary that shows numbers.

Machine-read files (``results.csv``, ``paper_tables.csv``, MLflow) keep raw numbers; only what a person reads
goes through :func:`fmt_value`.
"""

from __future__ import annotations

import math
import numbers
import sys

FIXED_RANGE = (1e-3, 1e4)  # |v| in [1e-3, 1e4) (or 0) is written in fixed notation, anything else scientific
DIVERGED = "diverged"


def count_noun(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` agreeing in number: "1 patient", "3 patients" (``plural``: an irregular plural)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def fmt_value(v, digits: int = 3, *, missing: str = "-") -> str:
    """``v`` as a person should read it.

    None/NaN -> ``missing`` ("-"); +-inf -> "diverged" (a loss that overflowed); a float with
    1e-3 <= |v| < 1e4, or 0, in fixed notation with ``digits`` decimals (0.612, 142.3); any other float in short
    scientific notation (1.4e+29, 2.3e-05) rather than a 30-digit number; ints as ints; strings unchanged.

    >>> fmt_value(0.61234), fmt_value(1.4e29), fmt_value(float("inf")), fmt_value(None), fmt_value(45)
    ('0.612', '1.4e+29', 'diverged', '-', '45')
    """
    if v is None or _is_pandas_missing(v):
        return missing
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, numbers.Integral):  # int and numpy integers
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(x):
        return missing
    if math.isinf(x):
        return DIVERGED
    lo, hi = FIXED_RANGE
    if x == 0 or lo <= abs(x) < hi:
        return f"{x:.{digits}f}"
    return f"{x:.1e}"


def _is_pandas_missing(v) -> bool:
    # pd.NA / pd.NaT cannot be turned into a float; without pandas loaded, v cannot be one of them.
    pd = sys.modules.get("pandas")
    return pd is not None and (v is pd.NA or v is pd.NaT)
