"""The command line starts without torch, ray or mlflow, and a user error leaving a command loads none of them
(a GPU machine runs the CLI without ray and mlflow; `orch prep` must not wait seconds for torch)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "ray", "mlflow")

_CHILD = """
import json, sys
from click.testing import CliRunner

heavy = {heavy!r}
loaded = {{}}
import orchestrator.cli
import orchestrator.cli.predict  # registered by orchestrator.cli; imported here too in case it is not yet
loaded["import"] = [m for m in heavy if m in sys.modules]
r = CliRunner().invoke(orchestrator.cli.main, ["prep", sys.argv[1], sys.argv[2]])
loaded["exit_code"] = r.exit_code
loaded["output"] = r.output
loaded["error"] = [m for m in heavy if m in sys.modules]
print(json.dumps(loaded))
"""


def test_cli_import_and_a_user_error_load_no_torch_ray_or_mlflow(tmp_path):
    missing = tmp_path / "no-such-source"
    code = _CHILD.format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code, str(missing), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["import"] == [], got
    assert got["exit_code"] == 1 and "does not exist" in got["output"] and "Traceback" not in got["output"], got
    assert got["error"] == [], got
