"""Fixtures of the sweep tests. The tiny prepared data (``prepared``), ``TINY`` and ``write_grid`` live in
tests/conftest.py (the tracking tests use them too); the last two are importable from here as well."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY, write_grid  # noqa: F401 - re-exported for the sweep tests


@pytest.fixture(autouse=True)
def _scratch_runs(scratch_runs):
    # Every sweep test keeps its trial run directories in its own tmp dir.
    yield


def done_outcome(**counts):
    """What a mocked ``run_sweep`` returns for the CLI tests: a sweep whose trials ended as ``counts`` say
    (default: one finished)."""
    from unittest import mock

    outcome = mock.Mock()
    outcome.counts = counts or {"finished": 1}
    outcome.summary.return_value = "sweep: done"
    from orchestrator.sweep.runner import SweepOutcome

    outcome.failure = lambda: SweepOutcome.failure(outcome)  # the real rule, on the mock's counts and results
    return outcome


def trial_pids() -> list[int]:
    """Processes running a Tune function trial (Ray titles them ``ray::ImplicitFunc...``)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"ImplicitFunc" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids
