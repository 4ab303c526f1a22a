"""The README's cluster commands, run for real against clusters/local.yaml pointed at this machine over SSH (head =
127.0.0.1, no workers): `ray up -y`, `ray exec`, `ray job submit` of `orch sweep --grid smoke` (data on the node's
shared directory; trials log to the `mlflow server` the head started, behind its login), `orch report` against that
server, `ray down -y`. What the test changes is what a user edits: the "EDIT THIS" block of local.yaml and the
values of clusters/local.env (free ports, so that it runs beside other tests)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import RAY_TMP, SshNode

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the laptop's `ray` and `orch`


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Laptop:
    """The machine running `ray up`: its HOME (with the secrets), environment, and the log of commands it ran."""

    home: Path
    env: dict
    log: list = field(default_factory=list)

    def run(self, args: list[str], timeout: float, cwd: Path = REPO) -> str:
        """Run one command as a user would, record it with its wall time, and return its output (fail on rc != 0)."""
        start = time.monotonic()
        done = subprocess.run(args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)
        self.log.append((" ".join(args), round(time.monotonic() - start, 1), done.returncode))
        out = done.stdout + done.stderr
        (self.home.parent / f"cmd{len(self.log)}.log").write_text(" ".join(args) + "\n" + out)
        assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{out[-6000:]}"
        return out


def _laptop(tmp_path: Path, node: SshNode) -> Laptop:
    """A laptop HOME holding the secrets the README has the user make: Ray's token and ~/.orch/mlflow.env."""
    home = node.key.parents[1]
    env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    laptop = Laptop(home, env)
    laptop.run(["ray", "get-auth-token", "--generate"], timeout=60)
    (home / ".orch").mkdir(mode=0o700)
    password = secrets.token_hex(16)
    (home / ".orch" / "mlflow.env").write_text(
        f"MLFLOW_TRACKING_USERNAME=orch-admin\nMLFLOW_TRACKING_PASSWORD={password}\n")
    laptop.env.update(MLFLOW_TRACKING_USERNAME="orch-admin", MLFLOW_TRACKING_PASSWORD=password)
    return laptop


def _cluster_env(tmp_path: Path, node: SshNode, shared: Path, ports: dict) -> Path:
    """clusters/local.env with this machine's values (each key must exist in the file a user edits)."""
    values = {"ORCH_VENV": str(node.venv), "ORCH_SHARED": str(shared), "RAY_PORT": ports["gcs"],
              "RAY_DASHBOARD_PORT": ports["dashboard"], "MLFLOW_PORT": ports["mlflow"],
              "RAY_START_ARGS": f'"--num-cpus=2 --temp-dir={RAY_TMP} --ray-client-server-port={ports["client"]}'
                                f' --dashboard-agent-listen-port={ports["agent"]} --dashboard-agent-grpc-port='
                                f'{ports["agent_grpc"]} --metrics-export-port={ports["metrics"]}'
                                f' --runtime-env-agent-port={ports["runtime_env"]}"'}
    lines = (REPO / "clusters" / "local.env").read_text().splitlines()
    keys = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    assert set(values) <= keys, f"clusters/local.env lacks {set(values) - keys}"
    edited = [f"{line.split('=', 1)[0]}={values[line.split('=', 1)[0]]}"
              if "=" in line and line.split("=", 1)[0] in values else line for line in lines]
    path = tmp_path / "local.env"
    path.write_text("\n".join(edited) + "\n")
    return path


def _cluster_yaml(tmp_path: Path, node: SshNode, env_file: Path) -> Path:
    """clusters/local.yaml with its "EDIT THIS" block set to this machine (head 127.0.0.1, no workers)."""
    cfg = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    cfg.update(cluster_name=f"orch-e2e-{os.getpid()}", min_workers=0, max_workers=0)
    cfg["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cfg["auth"].update(ssh_user=node.user, ssh_private_key=str(node.key))
    assert cfg["file_mounts"]["~/.orch/cluster.env"] == "clusters/local.env"
    cfg["file_mounts"]["~/.orch/cluster.env"] = str(env_file)
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _shared_data(node: SshNode) -> Path:
    """The node's shared directory with a tiny prepared dataset in it (5 synthetic patients)."""
    from data_prep import make_synthetic, prepare

    shared = node.home / "shared"
    make_synthetic(shared / "src", patients=5, seed=3, min_slices=20, max_slices=22)
    prepare(shared / "src", shared / "prepared", workers=1)
    node.chown(shared)
    return shared


def _stop_cluster(laptop: Laptop, cluster: Path, node: SshNode) -> None:
    """`ray down -y`, then the MLflow server the head started (its process group, from its pid file)."""
    try:
        laptop.run(["ray", "down", "-y", str(cluster)], timeout=120)
    finally:
        pid_file = node.home / "mlflow" / "server.pid"
        if pid_file.exists():
            _end_group(int(pid_file.read_text()))


def _end_group(pgid: int, grace: float = 30) -> None:
    """SIGTERM to a process group, SIGKILL after ``grace`` seconds; returns once the group is gone."""
    deadline = time.monotonic() + grace
    try:
        os.killpg(pgid, signal.SIGTERM)
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)
            time.sleep(0.2)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _sweep_and_report(laptop: Laptop, cluster: Path, node: SshNode, ports: dict, tmp_path: Path) -> None:
    """The node runs orch from the checkout `ray up` synced to it; a sweep submitted as a Ray job trains there and
    logs to the head's MLflow server; `orch report` on the laptop reads the sweep back from that server."""
    where = laptop.run(["ray", "exec", str(cluster),
                        '. ~/.orch/cluster.env && python -c "import orchestrator; print(orchestrator.__file__)"'],
                       timeout=60)
    assert f"{node.home}/orch/orchestrator/__init__.py" in where, where
    shared = node.home / "shared"
    job = laptop.run(["ray", "job", "submit", "--address", f"http://127.0.0.1:{ports['dashboard']}", "--",
                      "orch", "sweep", "--grid", "smoke", "--address", "auto", "--data", f"{shared}/prepared",
                      "--storage", f"{shared}/sweeps"], timeout=600)
    assert "succeeded" in job and "sweep smoke: 4 configurations (4 finished)" in job, job[-3000:]
    report = laptop.run(["orch", "report", "smoke", "--tracking-uri", f"http://127.0.0.1:{ports['mlflow']}",
                         "--out", str(tmp_path / "report"), "--no-plots"], timeout=120, cwd=laptop.home)
    assert f"results: mlflow:http://127.0.0.1:{ports['mlflow']}#smoke" in report, report  # read from the server
    assert report.count("| finished |") == 4, report
    assert (shared / "sweeps" / "smoke" / "results.csv").is_file()
    # What the cluster files tell a user to run right before `ray down`: the runs copied to the shared directory,
    # from which the next head restores them.
    laptop.run(["ray", "exec", str(cluster), '. ~/.orch/cluster.env && python -m orchestrator.tracking.backup once '
                '~/mlflow "$ORCH_SHARED/mlflow-backup"'], timeout=120)
    with sqlite3.connect(f"file:{shared / 'mlflow-backup' / 'mlflow.db'}?mode=ro", uri=True) as db:
        names = {n for (n,) in db.execute("SELECT name FROM runs")}
    assert {"smoke", "resnet18-adam-lr1e-03", "resnet34-adam-lr1e-04"} <= names, names


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_up_job_submit_report_down(ssh_node, tmp_path):
    names = ["gcs", "dashboard", "mlflow", "client", "agent", "agent_grpc", "metrics", "runtime_env"]
    ports = dict(zip(names, _free_ports(len(names))))
    laptop = _laptop(tmp_path, ssh_node)
    shared = _shared_data(ssh_node)
    cluster = _cluster_yaml(tmp_path, ssh_node, _cluster_env(tmp_path, ssh_node, shared, ports))
    laptop.env["RAY_AUTH_MODE"] = "token"
    try:
        laptop.run(["ray", "up", "-y", str(cluster)], timeout=300)
        _sweep_and_report(laptop, cluster, ssh_node, ports, tmp_path)
    finally:
        _stop_cluster(laptop, cluster, ssh_node)
        print("\n".join(f"{secs:6.1f} s  rc={rc}  {cmd}" for cmd, secs, rc in laptop.log))
    with socket.socket() as s:  # the head's MLflow server is gone
        assert s.connect_ex(("127.0.0.1", ports["mlflow"])) != 0
