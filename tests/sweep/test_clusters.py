"""Both cluster files pass Ray's own validator offline (what `ray up` runs before touching a cloud); broken
files are rejected; every key carries a comment; nothing listens on all interfaces, Ray needs its token, MLflow
needs a login, no secret is written in the files, and on AWS only SSH is open to the internet."""

from __future__ import annotations

import configparser
import copy
import importlib.util
import re
import subprocess
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


def _validate(cfg: dict) -> dict:
    # `ray up` = prepare_config (defaults, local-provider rewrite) then validate_config (JSON schema + checks).
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_cluster_file_is_valid(name):
    prepared = _validate(_load(name))
    assert prepared["cluster_name"].startswith("orch-")
    head_cmds = " ".join(prepared["head_start_ray_commands"])
    assert "mlflow server" in head_cmds and "MLFLOW_TRACKING_URI" in head_cmds
    assert "$ORCH_SHARED" in " ".join(prepared["setup_commands"])


def test_gpu_cluster_has_gpu_workers_and_a_head_without_gpus():
    cfg = _validate(_load("gpu.yaml"))
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"]["GPU"] == 0
    assert types["gpu_worker"]["resources"]["GPU"] >= 1


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_every_key_has_a_comment(name):
    lines = (CLUSTERS / name).read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")) or ":" not in stripped.split("#")[0]:
            continue
        previous = lines[i - 1].strip() if i else ""
        assert "#" in line or previous.startswith("#"), f"{name} line {i + 1} has no comment: {line!r}"


def test_broken_cluster_files_are_rejected():
    bad_type = _load("gpu.yaml")
    bad_type["available_node_types"]["gpu_worker"]["resources"] = {"GPU": "one"}
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        _validate(bad_type)
    bad_head = _load("gpu.yaml")
    bad_head["head_node_type"] = "gpu_head"
    with pytest.raises(ValueError, match="head_node_type"):
        _validate(bad_head)
    unknown_key = _load("gpu.yaml")
    unknown_key["max_worker"] = 3  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _validate(unknown_key)
    no_head_ip = _load("local.yaml")
    del no_head_ip["provider"]["head_ip"]
    with pytest.raises(click.ClickException, match="head_ip"):
        _validate(no_head_ip)


# --- exposure: what listens where, who may connect ---------------------------------------------------------------

COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands")


def _commands(cfg: dict) -> list[str]:
    return [cmd for key in COMMAND_KEYS for cmd in cfg.get(key, [])]


def _mlflow_server(cfg: dict) -> str:
    (cmd,) = [c for c in cfg["head_start_ray_commands"] if "mlflow server" in c and "pkill" not in c]
    return cmd


def _exposure_problems(cfg: dict) -> list[str]:
    """What in a cluster file lets someone outside the cluster in (empty: nothing)."""
    problems = [f"listens on all interfaces: {c!r}" for c in _commands(cfg) if "0.0.0.0" in c or "::/0" in c]
    (head,) = [c for c in cfg["head_start_ray_commands"] if "ray start --head" in c]
    if not re.search(r"--dashboard-host[= ]127\.0\.0\.1(\s|$)", head):
        problems.append("the Ray dashboard does not listen on 127.0.0.1 only")
    for cmd in _commands(cfg):
        if "ray start" in cmd and not re.search(r"RAY_AUTH_MODE=token\b.*ray start", cmd):
            problems.append(f"Ray starts without token authentication: {cmd!r}")
    if "~/.ray/auth_token" not in cfg.get("file_mounts", {}):
        problems.append("the Ray token (~/.ray/auth_token) is not copied to the nodes")
    server = _mlflow_server(cfg)
    if "--app-name basic-auth" not in server or "MLFLOW_AUTH_CONFIG_PATH=" not in server:
        problems.append("the MLflow server runs without basic-auth")
    host = re.search(r"--host (\S+)", server)
    if not host or host.group(1) != "$RAY_HEAD_IP":  # the head's cluster address
        problems.append(f"the MLflow server listens on {host and host.group(1)!r}, not the head's cluster address")
    return problems


def _secret_literals(text: str) -> list[str]:
    """Passwords, tokens or keys written as values (``X_PASSWORD=abc``, ``password: abc``); references to
    environment variables (``"$X"``, ``$(...)``), files (``~/.ray/auth_token``) and placeholders (``%s``) are fine."""
    pattern = r"(?i)\w*(password|secret_key|auth_token)[\"']?\s*[:=]\s*[\"']?(?![$%~/\"'\s])\S+"
    return [m.group(0) for m in re.finditer(pattern, text)]


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_nothing_listens_on_all_interfaces_and_ray_and_mlflow_need_credentials(name):
    cfg = _load(name)
    assert _exposure_problems(cfg) == []
    assert _secret_literals((CLUSTERS / name).read_text()) == []
    # Trials on the workers log to the head's MLflow with credentials from the env file copied to every node.
    assert cfg["file_mounts"]["~/.orch/mlflow.env"].startswith("~/")  # from the user's home, never from the repo
    for cmd in [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]:
        assert ". ~/.orch/mlflow.env" in cmd and "MLFLOW_TRACKING_URI=http://" in cmd
    for cmd in _commands(cfg):  # the commands are valid shell
        subprocess.run(["bash", "-n", "-c", cmd], check=True)


def _edit(key: str, needle: str, old: str, new: str, regex: bool = False):
    """A change of the cluster file: in the command of ``key`` that contains ``needle``, ``old`` becomes ``new``."""
    def change(cfg):
        cmds = cfg[key]
        (i,) = [i for i, c in enumerate(cmds) if needle in c]
        cmds[i] = re.sub(old, new, cmds[i]) if regex else cmds[i].replace(old, new)
    return change


@pytest.mark.parametrize("change, problem", [
    (_edit("head_start_ray_commands", "ray start", "127.0.0.1", "0.0.0.0"), "listens on all interfaces"),
    (_edit("head_start_ray_commands", "ray start", " --dashboard-host=127.0.0.1", ""), "dashboard"),
    (_edit("worker_start_ray_commands", "ray start", "RAY_AUTH_MODE=token ", ""), "without token"),
    (lambda c: c["file_mounts"].pop("~/.ray/auth_token"), "Ray token"),
    (_edit("head_start_ray_commands", "mlflow server", "--app-name basic-auth ", ""), "without basic-auth"),
    (_edit("head_start_ray_commands", "mlflow server", r"--host \S+", "--host 0.0.0.0", regex=True),
     "listens on '0.0.0.0'"),
])
def test_exposed_cluster_files_are_caught(change, problem):
    cfg = _load("gpu.yaml")
    change(cfg)
    assert any(problem in p for p in _exposure_problems(cfg)), _exposure_problems(cfg)


def test_password_literals_are_caught():
    assert _secret_literals("MLFLOW_TRACKING_PASSWORD=hunter22 mlflow server") == ["MLFLOW_TRACKING_PASSWORD=hunter22"]
    assert _secret_literals("admin_password = hunter22") == ["admin_password = hunter22"]
    assert _secret_literals('X_PASSWORD="$MLFLOW_TRACKING_PASSWORD" KEY=$(python -c 1) printf PASSWORD=%s') == []


def _aws_inbound_rules(cfg: dict, group_id: str = "sg-self") -> list[dict]:
    """The inbound rules `ray up` gives the security group it creates: all traffic from the group itself, SSH from
    anywhere, then provider.security_group.IpPermissions (ray/autoscaler/_private/aws/config.py,
    _create_default_inbound_rules; that module needs boto3, hence this copy, checked against it below)."""
    return [
        {"FromPort": -1, "ToPort": -1, "IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]},
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        *cfg["provider"].get("security_group", {}).get("IpPermissions", []),
    ]


def _open_to_outside(rules: list[dict]) -> list[tuple]:
    """(protocol, from port, to port) of every rule that admits addresses outside the group."""
    return [(r["IpProtocol"], r.get("FromPort"), r.get("ToPort")) for r in rules
            if r.get("IpRanges") or r.get("Ipv6Ranges") or r.get("PrefixListIds")]


def test_gpu_cluster_security_group_opens_only_ssh():
    cfg = _validate(_load("gpu.yaml"))
    group = cfg["provider"]["security_group"]
    assert group["GroupName"] and isinstance(group["IpPermissions"], list)
    rules = _aws_inbound_rules(cfg)
    assert _open_to_outside(rules) == [("tcp", 22, 22)]
    assert [r for r in rules if r.get("UserIdGroupPairs")] == [rules[0]]  # intra-cluster: the group itself only
    opened = _load("gpu.yaml")
    opened["provider"]["security_group"]["IpPermissions"].append(
        {"FromPort": 5000, "ToPort": 5000, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    assert ("tcp", 5000, 5000) in _open_to_outside(_aws_inbound_rules(_validate(opened)))


def test_the_copy_of_rays_aws_rules_matches_ray():
    pytest.importorskip("boto3")
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    cfg = _load("gpu.yaml")
    extra = cfg["provider"]["security_group"]["IpPermissions"]
    assert _create_default_inbound_rules({"sg-self"}, extra) == _aws_inbound_rules(cfg)


def _mlflow_auth_config_reader():
    """MLflow's own reader of the basic-auth settings, loaded from its file: importing ``mlflow.server.auth`` needs
    Flask-WTF (the ``mlflow[auth]`` extra the cluster files install on the head), which orch does not depend on."""
    path = Path(importlib.util.find_spec("mlflow").origin).parent / "server" / "auth" / "config.py"
    spec = importlib.util.spec_from_file_location("_mlflow_auth_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_auth_config


def test_mlflow_auth_config_is_mounted_valid_and_holds_no_credentials(monkeypatch):
    for name in ("gpu.yaml", "local.yaml"):
        cfg = _load(name)
        ini = cfg["file_mounts"]["~/.orch/mlflow-auth.ini"]
        assert (CLUSTERS.parent / ini).is_file()  # `ray up` runs from the repository root
        assert "MLFLOW_AUTH_CONFIG_PATH=$HOME/.orch/mlflow-auth.ini" in _mlflow_server(cfg)
    path = CLUSTERS / "mlflow-auth.ini"
    parser = configparser.ConfigParser()
    parser.read(path)
    assert not {"admin_username", "admin_password"} & set(parser["mlflow"])  # from the environment only
    assert _secret_literals(path.read_text()) == []
    # MLflow's own reader: the admin comes from the variables the cluster files set from ~/.orch/mlflow.env.
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "orch-admin")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "from-the-env-file")
    conf = _mlflow_auth_config_reader()()
    assert (conf.admin_username, conf.admin_password) == ("orch-admin", "from-the-env-file")
    assert conf.default_permission == "NO_PERMISSIONS"  # other users see nothing unless the admin grants it
    assert conf.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"


# --- as written: orch, the settings and a Python >= 3.11 reach every node ------------------------------------------

def _sourced_env(name: str, **env: str) -> dict:
    """The variables a node's command sees after sourcing the cluster's env file (as `ray up` copies it)."""
    path = CLUSTERS.parent / _load(name)["file_mounts"]["~/.orch/cluster.env"]
    out = subprocess.run(["bash", "-c", f'set -a && . "{path}" && env -0'], capture_output=True, text=True,
                         check=True, env={"HOME": "/home/node", "PATH": "/usr/bin:/bin", **env}).stdout
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_settings_reach_the_nodes_through_the_env_file(name):
    cfg = _load(name)
    assert cfg["file_mounts"]["~/.orch/cluster.env"] == f"clusters/{name.replace('.yaml', '.env')}"
    sourcing = [c for c in _commands(cfg) if "$" in c and "~/.orch/cluster.env" not in c]
    assert sourcing == [c for c in sourcing if "server.pid" in c]  # every command using a setting reads the file
    on_head = _sourced_env(name, SSH_CONNECTION="203.0.113.9 50000 10.0.0.10 22")  # laptop -> head
    assert on_head["RAY_HEAD_IP"] == "10.0.0.10"  # the address `ray up` reached the head at
    assert on_head["PATH"].startswith("/home/node/orch-venv/bin:")  # orch's environment first
    on_worker = _sourced_env(name, RAY_HEAD_IP="10.0.0.20", SSH_CONNECTION="10.0.0.20 50000 10.0.0.11 22")
    assert on_worker["RAY_HEAD_IP"] == "10.0.0.20"  # what Ray exports to the workers' commands wins
    for key in ("ORCH_VENV", "ORCH_SHARED", "RAY_PORT", "RAY_DASHBOARD_PORT", "MLFLOW_PORT"):
        assert on_head[key], key
    text = (CLUSTERS / name).read_text()
    assert not re.search(r"\b(?!127\.0\.0\.1)\d+\.\d+\.\d+\.\d+\b", " ".join(_commands(cfg)))  # no literal IPs
    assert "${" not in " ".join(_commands(cfg))  # no laptop-side defaults that never reach the node
    assert "git+" not in text and "OWNER" not in text


def test_gpu_nodes_mount_the_efs_the_env_file_names():
    cfg = _load("gpu.yaml")
    env = _sourced_env("gpu.yaml")
    (mount,) = [c for c in cfg["setup_commands"] if "mount -t nfs4" in c]
    source, target = re.search(r"-o nfsvers=4\.1 (\S+) (\S+);", mount).groups()
    echo = f'set -a && . "{CLUSTERS / "gpu.env"}" && echo {source} {target}'
    expanded = subprocess.run(["bash", "-c", echo], capture_output=True, text=True, check=True).stdout
    assert expanded.split() == [f"{env['EFS_ID']}.efs.{env['AWS_REGION']}.amazonaws.com:/", "/mnt/shared"]
    assert env["AWS_REGION"] == cfg["provider"]["region"]


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_orch_reaches_the_nodes_from_the_checkout_with_python_311(name):
    cfg = _load(name)
    mounts = {remote: local for remote, local in cfg["file_mounts"].items() if remote.startswith("~/orch/")}
    for local in mounts.values():
        assert (CLUSTERS.parent / local).exists(), local  # relative to the repository root, where `ray up` runs
    assert {"pyproject.toml", "orchestrator", "data_prep", "models"} <= set(mounts.values())
    assert any('pip install -q -e "$HOME/orch[cluster]"' in c for c in cfg["setup_commands"])
    assert any("sys.version_info >= (3, 11)" in c for c in cfg["setup_commands"])
    assert re.fullmatch(r"python3\.(1[1-9])", _sourced_env(name)["ORCH_PYTHON"])
    if name == "gpu.yaml":  # the AMI's Python is 3.10: the nodes install ORCH_PYTHON
        assert any('apt-get install -y -q "$ORCH_PYTHON" "$ORCH_PYTHON-venv"' in c for c in cfg["setup_commands"])


def test_local_cluster_is_a_fixed_pool():
    cfg = _load("local.yaml")
    assert cfg["min_workers"] == cfg["max_workers"] == len(cfg["provider"]["worker_ips"])


def test_the_cluster_extra_has_what_ray_up_and_job_submit_need():
    import tomllib

    extras = tomllib.loads((CLUSTERS.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!;]", req)[0].strip() for req in extras["cluster"]}
    assert {"ray[default]", "boto3", "mlflow[auth]"} <= names
    assert "orch[cluster]" in extras["test"]  # tests/cluster runs `ray up` / `ray job submit`

