"""The cross-validation summary: mean, median and a seeded patient-bootstrap 95 % CI of the per-patient Dice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.training.cv import bootstrap_ci, summarize


def _dice(n: int, seed: int = 0) -> np.ndarray:
    """Per-patient Dice as a CV gives them: most patients good, a few failures near 0."""
    rng = np.random.default_rng(seed)
    return np.clip(np.where(rng.random(n) < 0.1, rng.uniform(0, 0.2, n), rng.normal(0.82, 0.1, n)), 0, 1)


def test_summary_figures():
    s = summarize([0.2, 0.4, 0.9, 1.0])
    assert s["n_patients"] == 4
    assert s["mean"] == pytest.approx(0.625) and s["median"] == pytest.approx(0.65)
    assert s["std"] == pytest.approx(np.std([0.2, 0.4, 0.9, 1.0], ddof=1))
    assert s["ci95_low"] < s["mean"] < s["ci95_high"]


def test_ci_contains_the_mean_and_narrows_with_more_patients():
    widths = []
    for n in (20, 110, 1000):
        x = _dice(n)
        lo, hi = bootstrap_ci(x)
        assert lo < float(np.mean(x)) < hi
        assert 0 <= lo and hi <= 1
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # ~ 2 x 1.96 x sd / sqrt(n): the percentile bootstrap of the mean is close to the normal interval at n=1000
    x = _dice(1000)
    assert widths[2] == pytest.approx(2 * 1.96 * np.std(x, ddof=1) / math.sqrt(1000), rel=0.1)


def test_bootstrap_is_seeded_and_takes_other_statistics():
    x = _dice(50)
    assert bootstrap_ci(x) == bootstrap_ci(list(x)) == bootstrap_ci(x, seed=0)
    assert bootstrap_ci(x, seed=1) != bootstrap_ci(x, seed=0)
    lo, hi = bootstrap_ci(x, stat=np.median)
    assert lo <= float(np.median(x)) <= hi
    assert summarize(x) == summarize(x)


def test_no_patients_gives_nan_not_an_error():
    s = summarize([])
    assert s["n_patients"] == 0 and all(math.isnan(s[k]) for k in ("mean", "median", "ci95_low", "ci95_high"))
    one = summarize([0.7])
    assert one["mean"] == one["ci95_low"] == one["ci95_high"] == pytest.approx(0.7) and math.isnan(one["std"])
