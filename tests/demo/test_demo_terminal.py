"""``orch demo`` on a terminal (a real pseudo-terminal, so rich draws its live displays): the prep progress bars are
drawn for the last time before the sweep's live table first appears, not again after the sweep (they were, while
the prep display stayed open over the whole sweep)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.conftest import REPO, write_grid

pytestmark = pytest.mark.slow

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_PREP_BARS = re.compile(r"validating slices|writing shards|verifying shards")


def run_in_pty(cmd: list[str], cwd, env: dict, timeout: float = 900) -> str:
    """What ``cmd`` writes to a 120x40 pseudo-terminal (its stdout and stderr), until it exits."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return _ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_demo_prep_bars_end_before_the_sweep_table_on_a_terminal(tmp_path):
    grid = write_grid(tmp_path / "one.csv", [{"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3}])
    env = {k: v for k, v in os.environ.items() if k not in ("ORCH_PLAIN", "MLFLOW_TRACKING_URI")}
    env.update(TERM="xterm-256color", COLUMNS="120", LINES="40", ORCH_RUNS_DIR=str(tmp_path / "runs"),
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    text = run_in_pty([sys.executable, "-m", "orchestrator.cli", "demo", "--workdir", str(tmp_path / "demo"),
                       "--patients", "4", "--grid", str(grid), "--image-size", "32", "--max-steps", "1",
                       "--epochs", "1"], cwd=tmp_path, env=env)
    sweep_starts = text.find("sweep demo:")
    last_prep = max(m.start() for m in _PREP_BARS.finditer(text))
    assert 0 < last_prep < sweep_starts, (last_prep, sweep_starts, text[-2000:])
    assert "models:/demo-best@champion" in text  # the closing lines name the registered champion
