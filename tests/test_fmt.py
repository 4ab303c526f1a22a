"""``fmt_value``: how every table, log line and summary shows a number to a person."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.fmt import fmt_value


@pytest.mark.parametrize("v, digits, text", [
    (0.61234, 3, "0.612"),
    (0.0, 3, "0.000"),
    (0.001, 3, "0.001"),  # the lower edge of fixed notation
    (142.349, 1, "142.3"),
    (9999.5, 2, "9999.50"),  # just under the upper edge
    (1e4, 3, "1.0e+04"),
    (1.4e29, 3, "1.4e+29"),  # a diverged loss: short, never 30 digits
    (-1.4e29, 3, "-1.4e+29"),
    (2.3e-05, 3, "2.3e-05"),
    (-0.5, 2, "-0.50"),
    (np.float32(0.25), 3, "0.250"),
    (45, 3, "45"),
    (np.int64(7), 3, "7"),
    ("finished", 3, "finished"),
])
def test_numbers_read_as_a_person_expects(v, digits, text):
    assert fmt_value(v, digits) == text


@pytest.mark.parametrize("v", [None, math.nan, np.nan, pd.NA])
def test_missing_is_a_dash_or_the_given_text(v):
    assert fmt_value(v) == "-"
    assert fmt_value(v, missing="–") == "–"


@pytest.mark.parametrize("v", [math.inf, -math.inf, np.float64("inf")])
def test_infinite_is_diverged(v):
    assert fmt_value(v) == "diverged"


def test_default_is_three_decimals():
    assert fmt_value(1 / 3) == "0.333" and len(fmt_value(1.4e29)) < 10
