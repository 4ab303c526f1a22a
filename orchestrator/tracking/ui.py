"""Start an ``mlflow server`` for a store and wait until it answers (``orch ui``, and the tests' server)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orchestrator.tracking import store

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port``, i.e. a server could bind it now. SO_REUSEADDR as uvicorn sets
    it, so connections of a just-stopped server (TIME_WAIT) do not count as "in use"."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when ``url``'s ``/health`` returns HTTP 200."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Server:
    """A running ``mlflow server``; ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port

    def stop(self) -> None:
        """End the server and the workers it spawned (its own process group, see ``start_server``)."""
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self._group_alive():
                time.sleep(0.1)
            if not self._group_alive():
                break
        self.process.poll()

    def _group_alive(self) -> bool:
        self.process.poll()  # reap the leader: a zombie would keep the group "alive"
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True


def start_server(backend_uri: str, artifacts_dir: str | os.PathLike, host: str = "127.0.0.1",
                 port: int | None = None, log_path: str | os.PathLike | None = None,
                 wait_s: float = 90.0) -> Server:
    """Start ``mlflow server`` on ``backend_uri`` (SQLite), serving artefacts from ``artifacts_dir``, and wait
    until ``/health`` answers. Raises ``TrackingError`` when ``port`` is taken, or (with the server's last log
    lines) when the server exits or does not answer."""
    port = port or free_port(host)
    # Another program on the port would answer /health while our server fails with "address already in use":
    # its URL must never be reported as ours.
    if not port_free(host, port):
        raise store.TrackingError(f"port {port} on {host} is already in use by another program: stop it, or pass "
                                  "another --port")
    artifacts = Path(artifacts_dir).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path or artifacts.parent / f"mlflow-server-{port}.log")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.check_uri(backend_uri),
           "--artifacts-destination", str(artifacts), "--host", host, "--port", str(port), "--workers", "1"]
    # The server's job runner (7 huey consumer processes for GenAI jobs) is not needed to browse runs: off,
    # unless the user turned it on explicitly.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    with open(log_path, "ab") as logf:  # own session: stop() ends the server and its workers as one group
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        # Ours only if our process still runs once the port answers (it exits when it cannot bind). A program
        # that took the port between the check above and our bind could still answer first: rare, not covered.
        if answers(url) and proc.poll() is None:
            log.info("mlflow server on %s answers at %s", backend_uri, url)
            return Server(url=url, process=proc, log_path=log_path)
        time.sleep(0.3)
    Server(url, proc, log_path).stop()
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    what = (f"exited (code {proc.returncode})" if proc.returncode is not None
            else f"did not answer within {wait_s:.0f} s")
    raise store.TrackingError(f"mlflow server for {backend_uri} on {url} {what} (log {log_path}):\n{tail}")


def start_ui(workdir: str | os.PathLike | None = None, tracking_uri: str | None = None, host: str = "127.0.0.1",
             port: int = 5000) -> Server | str:
    """The MLflow UI on a working directory's store: a started ``Server`` for a SQLite store, or the URL itself
    when ``tracking_uri`` is already an ``http(s)://`` server. When ``port`` is taken by another program the UI
    starts on a free port instead (``Server.port`` says which). Raises ``TrackingError`` when the store is absent."""
    uri = tracking_uri or store.default_tracking_uri(workdir)
    if store.is_remote(uri):
        return uri
    db = Path(store.check_uri(uri)[len("sqlite:///"):])
    if not db.is_file():
        raise store.TrackingError(f"no MLflow store at {db}: run `orch sweep` in {db.parent} first, or pass "
                                  "--workdir / --tracking-uri pointing at the sweep's store")
    if not port_free(host, port):
        free = free_port(host)
        log.warning("port %d on %s is in use by another program: the MLflow UI starts on port %d", port, host, free)
        port = free
    return start_server(uri, db.parent / store.ARTIFACTS_NAME, host=host, port=port,
                        log_path=db.parent / "mlflow-ui.log")
