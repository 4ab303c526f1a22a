"""orchestrator.files: atomic writes leave whole files with the permissions an ordinary write would give (a
results.csv once came out 0600, from mkstemp, beside 0644 tables), or those asked for."""

from __future__ import annotations

import os
import stat

from orchestrator.files import atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_the_permissions_of_an_ordinary_write(tmp_path):
    (tmp_path / "plain.csv").write_text("a\n")
    atomic_write_text(tmp_path / "results.csv", "a\n")
    assert _mode(tmp_path / "results.csv") == _mode(tmp_path / "plain.csv")  # 0644 under the usual umask 022
    atomic_write_text(tmp_path / "secret.env", "k=v\n", mode=0o600)
    assert _mode(tmp_path / "secret.env") == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left behind
