"""``orch ui``: starts the MLflow UI on a working directory's store, prints its URL, the page answers 200, and
the server goes away with the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.tracking import SweepTracker, default_tracking_uri
from orchestrator.tracking.ui import answers, free_port


@pytest.mark.slow
def test_orch_ui_serves_the_store_and_stops_with_the_command(tmp_path):
    SweepTracker.open(default_tracking_uri(tmp_path), experiment="ui-sweep")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", "--workdir", str(tmp_path),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "MLflow UI:" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "orch ui exited before printing its URL"
        url = line.split("MLflow UI:")[1].split()[0]
        assert url == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(url + "/", timeout=10) as r:
            assert r.status == 200
        req = urllib.request.Request(url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-sweep")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert b"ui-sweep" in r.read()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert not answers(url, timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_orch_ui_without_a_store_says_what_to_do(tmp_path):
    out = CliRunner().invoke(main, ["ui", "--workdir", str(tmp_path)])
    assert out.exit_code == 1
    assert "no MLflow store at" in out.output and "orch sweep" in out.output


def test_orch_ui_with_a_server_uri_prints_it():
    out = CliRunner().invoke(main, ["ui", "--tracking-uri", "http://head-node:5000"])
    assert out.exit_code == 0 and "MLflow UI: http://head-node:5000" in out.output
