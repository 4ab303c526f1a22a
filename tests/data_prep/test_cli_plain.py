"""Plain output where no terminal is attached (a log file, ``ray job submit``, CI): ``orch prep`` prints one line
per stage start and end and at most one per tenth of a stage; a terminal, or ``ORCH_PLAIN``, decides."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys

from click.testing import CliRunner

from data_prep import make_synthetic
from orchestrator.cli import main
from orchestrator.cli.common import interactive, stage_progress

_LINE = re.compile(r"^prep: (validate|write|verify) (started, \d+ (patients|shards)|\d+/\d+ (patients|shards)"
                   r"( in \d+\.\d s)?)$")


def test_prep_without_a_terminal_prints_plain_stage_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORCH_PLAIN", raising=False)  # CliRunner's stdout is no terminal: that alone decides
    make_synthetic(tmp_path / "s", patients=3, seed=1, min_slices=20, max_slices=21)
    res = CliRunner().invoke(main, ["prep", "s", "p", "--workers", "1"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("prep: ")]
    assert all(_LINE.match(line) for line in lines), lines
    assert lines[0] == "prep: validate started, 3 patients" and lines[-1].startswith("prep: write 3/3 patients in ")
    assert "prep: validate 3/3 patients in " in res.output and "prep: write started, 3 patients" in res.output
    assert lines.index("prep: validate 2/3 patients") < lines.index("prep: write started, 3 patients")
    assert "\x1b[" not in res.output and "━" not in res.output  # no escape codes, no bar
    assert "prepared 3 patients" in res.output

    res = CliRunner().invoke(main, ["prep", "--verify", "p"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "prep: verify started, 3 shards"
    assert "prep: verify 3/3 shards in " in res.output and "all 3 shards verify" in res.output


def test_a_long_stage_prints_at_most_a_line_per_tenth(capsys):
    with stage_progress(plain=True) as progress:
        for done in range(111):  # 110 patients, as the real dataset
            progress("validate", done, 110)
        progress("validate", 110, 110)  # a repeated end is not printed twice
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "prep: validate started, 110 patients" and lines[-1].startswith("prep: validate 110/110 ")
    assert lines[1:-1] == [f"prep: validate {n}/110 patients" for n in (11, 22, 33, 44, 55, 66, 77, 88, 99)]


def test_a_terminal_is_interactive_unless_orch_plain_is_set(monkeypatch):
    # A fresh process whose stdout is a pseudo-terminal, asked twice: without and with ORCH_PLAIN=1.
    code = ("import os; from orchestrator.cli.common import interactive; a = interactive(); "
            "os.environ['ORCH_PLAIN'] = '1'; print(a, interactive())")
    env = {k: v for k, v in os.environ.items() if k != "ORCH_PLAIN"}
    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", code], env=env, stdout=follower, check=True, timeout=60)
        assert os.read(leader, 100).decode().split() == ["True", "False"]
    finally:
        os.close(leader)
        os.close(follower)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a file: plain, and ORCH_PLAIN=0 does not fake a terminal
    monkeypatch.setenv("ORCH_PLAIN", "0")
    assert interactive() is False
