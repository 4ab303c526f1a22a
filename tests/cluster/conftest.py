"""This machine as a cluster node reached over SSH, for `ray up` against clusters/local.yaml (head = 127.0.0.1).

The node is a dedicated account (``orch-e2e``) served by an sshd of the test's own (its config, host key and log
in tmp_path, on 127.0.0.1:22: Ray's SSH runner has no port setting). A separate account keeps the cluster's
``~/.ray``, ``~/.orch`` and ``~/orch`` out of root's home, and its ``ray stop`` (run by ``ray up`` and ``ray down``)
can only stop its own processes, never the local Ray clusters of tests running beside it."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

NODE_USER = "orch-e2e"
SSHD = "/usr/sbin/sshd"
RAY_TMP = "/tmp/orch-e2e-ray"  # the node's Ray temp dir (short: Ray's socket paths have a length limit)


@dataclass
class SshNode:
    """The node: its account, home, the key that logs in, and the orch environment made for it."""

    user: str
    home: Path
    key: Path
    venv: Path

    def chown(self, path: Path) -> None:
        """Give ``path`` (recursively) to the node's account."""
        subprocess.run(["chown", "-R", f"{self.user}:{self.user}", str(path)], check=True)


def _why_no_ssh() -> str | None:
    """Why an SSH node cannot be made here (None: it can). .ci/run installs openssh-server and rsync."""
    if os.geteuid() != 0:
        return "needs root (to add the node account and run an sshd on port 22)"
    path = f"{os.environ.get('PATH', '')}:/usr/sbin"
    missing = [p for p in ("sshd", "rsync", "ssh", "ssh-keygen", "useradd", "runuser", "python3.11")
               if not shutil.which(p, path=path)]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install openssh-server rsync; .ci/run does)"
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 22)) == 0:
            return "port 22 of 127.0.0.1 is already in use (Ray's SSH runner always connects to port 22)"
    return None


def _make_account() -> tuple[Path, bool]:
    """The node's account (made when absent, its home emptied) and whether this call made it; an unlocked password
    field ('*': no password login) so that sshd without PAM accepts its key."""
    created = False
    try:
        home = Path(pwd.getpwnam(NODE_USER).pw_dir)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", NODE_USER], check=True)
        home, created = Path(pwd.getpwnam(NODE_USER).pw_dir), True
    subprocess.run(["usermod", "-p", "*", NODE_USER], check=True)
    _empty(home)
    return home, created


def _empty(home: Path) -> None:
    for child in home.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _authorize_key(home: Path, laptop: Path) -> Path:
    """A fresh ed25519 key in the laptop's ~/.ssh, authorized for the node's account."""
    key = laptop / ".ssh" / "id_ed25519"
    key.parent.mkdir(parents=True, mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    return key


def _why_node_cannot_use_the_project_venv() -> str | None:
    """The node account runs the project venv's packages (through its own venv, see ``_node_venv``)."""
    probe = Path(sysconfig.get_paths()["purelib"]) / "ray" / "__init__.py"
    done = subprocess.run(["runuser", "-u", NODE_USER, "--", "test", "-r", str(probe)])
    return None if done.returncode == 0 else f"the account {NODE_USER} cannot read {probe} (a parent is private)"


def _node_venv(home: Path) -> Path:
    """orch's environment on the node, made ahead of `ray up` so that no node downloads torch: a venv of the node
    account's own python3.11 (what local.env's ORCH_PYTHON names) that also sees the project venv's packages (a .pth
    line). `ray up`'s setup still installs orch into it, from the checkout it synced to the node."""
    venv = home / "venv"
    subprocess.run(["runuser", "-u", NODE_USER, "--", "python3.11", "-m", "venv", "--without-pip", str(venv)],
                   check=True, cwd=home)
    site = venv / "lib" / "python3.11" / "site-packages"
    project_site = sysconfig.get_paths()["purelib"]
    (site / "zz_orch_project_venv.pth").write_text(f"import site; site.addsitedir({project_site!r})\n")
    for script in ("ray", "mlflow"):  # what pip would have put in the venv's bin/ with them
        lines = (Path(sysconfig.get_paths()["scripts"]) / script).read_text().splitlines(keepends=True)
        (venv / "bin" / script).write_text(f"#!{venv}/bin/python\n" + "".join(lines[1:]))
        (venv / "bin" / script).chmod(0o755)
    return venv


def _sshd_config(tmp: Path) -> Path:
    host_key = tmp / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    config = tmp / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", "Port 22", f"HostKey {host_key}", f"PidFile {tmp / 'sshd.pid'}",
        f"AllowUsers {NODE_USER}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "AuthorizedKeysFile .ssh/authorized_keys",
        "MaxSessions 50", "MaxStartups 50",
    ]) + "\n")
    return config


def _start_sshd(tmp: Path) -> subprocess.Popen:
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = open(tmp / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(_sshd_config(tmp))], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 22)) == 0:
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"sshd did not start: {(tmp / 'sshd.log').read_text()}")


def _end_node_processes(user: str) -> None:
    """Stop what is left of the node account's processes (Ray, MLflow), each by its id."""
    out = subprocess.run(["ps", "-u", user, "-o", "pid="], capture_output=True, text=True).stdout
    for pid in (int(p) for p in out.split()):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


@pytest.fixture
def ssh_node(tmp_path) -> SshNode:
    """This machine as a node: the account, its key in ``tmp_path/laptop/.ssh``, its sshd on 127.0.0.1:22."""
    why = _why_no_ssh()
    if why:
        pytest.skip(f"no SSH node on this machine: {why}")
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    home, created = _make_account()
    why = _why_node_cannot_use_the_project_venv()
    if why:
        if created:
            subprocess.run(["userdel", "--remove", NODE_USER], check=False, capture_output=True)
        pytest.skip(f"no SSH node on this machine: {why}")
    key = _authorize_key(home, laptop)
    subprocess.run(["chown", "-R", f"{NODE_USER}:{NODE_USER}", str(home)], check=True)
    node = SshNode(NODE_USER, home, key, _node_venv(home))
    node.chown(node.venv)
    sshd = _start_sshd(tmp_path)
    try:
        yield node
    finally:
        _end_node_processes(NODE_USER)
        sshd.terminate()
        sshd.wait(timeout=10)
        for log in home.glob("mlflow/*.log"):  # kept for a failure's diagnosis
            shutil.copy(log, tmp_path / f"node-{log.name}")
        _empty(home)
        shutil.rmtree(RAY_TMP, ignore_errors=True)
        if created:  # the machine is left as the test found it: no orch-e2e account
            subprocess.run(["userdel", "--remove", NODE_USER], check=False, capture_output=True)
