"""``orch ui``: starts the MLflow UI on a working directory's store, prints its URL, the page answers 200, and
the server goes away with the command; a port held by another program is never reported as the UI's."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.tracking import SweepTracker, TrackingError, default_tracking_uri
from orchestrator.tracking.ui import answers, free_port, port_free, start_server


class _Health(http.server.BaseHTTPRequestHandler):
    """Another program's server: answers /health with 200, as an MLflow server would."""

    def do_GET(self):  # http.server's name for the GET handler
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.fixture
def foreign_port():
    """A port on 127.0.0.1 held by a real HTTP server that answers /health."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _ui_line(proc: subprocess.Popen, timeout: float = 120) -> list[str]:
    """The lines ``orch ui`` prints up to and including its "MLflow UI:" line."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline and not (lines and "MLflow UI:" in lines[-1]):
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "orch ui exited before printing its URL:\n" + "".join(lines)
        lines.append(line)
    return lines


@pytest.mark.slow
def test_orch_ui_serves_the_store_and_stops_with_the_command(tmp_path):
    SweepTracker.open(default_tracking_uri(tmp_path), experiment="ui-sweep")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", "--workdir", str(tmp_path),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        url = _ui_line(proc)[-1].split("MLflow UI:")[1].split()[0]
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


def test_start_server_refuses_a_port_another_program_answers_on(tmp_path, foreign_port):
    assert answers(f"http://127.0.0.1:{foreign_port}") and not port_free("127.0.0.1", foreign_port)
    with pytest.raises(TrackingError, match=f"port {foreign_port} on 127.0.0.1 is already in use"):
        start_server(default_tracking_uri(tmp_path), tmp_path / "artifacts", port=foreign_port,
                     log_path=tmp_path / "server.log")
    assert not (tmp_path / "server.log").exists()  # refused before starting anything


@pytest.mark.slow
def test_orch_ui_on_a_taken_port_serves_on_another_and_says_so(tmp_path, foreign_port):
    SweepTracker.open(default_tracking_uri(tmp_path), experiment="ui-sweep")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", "--workdir", str(tmp_path),
                             "--port", str(foreign_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        lines = _ui_line(proc)
        url = lines[-1].split("MLflow UI:")[1].split()[0]
        assert url != f"http://127.0.0.1:{foreign_port}"  # the other program's server is not reported as ours
        port = int(url.rsplit(":", 1)[1])
        assert f"port {foreign_port} on 127.0.0.1 is in use by another program" in "".join(lines)
        assert f"listens on port {port} instead" in "".join(lines)
        req = urllib.request.Request(url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-sweep")
        with urllib.request.urlopen(req, timeout=10) as r:  # our store answers there
            assert b"ui-sweep" in r.read()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert not answers(url, timeout=2) and answers(f"http://127.0.0.1:{foreign_port}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
