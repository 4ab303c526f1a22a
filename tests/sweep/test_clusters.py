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
    assert "/mnt/shared" in " ".join(prepared["setup_commands"])


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
    head_ip = cfg["provider"].get("head_ip")
    if not host or host.group(1) not in (head_ip, "$(hostname"):  # the head's cluster address
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
    for cmd in cfg["head_start_ray_commands"][-1:] + cfg["worker_start_ray_commands"][-1:]:
        assert ". ~/.orch/mlflow.env" in cmd and "MLFLOW_TRACKING_URI=http://" in cmd
    for cmd in _commands(cfg):  # the commands are valid shell
        subprocess.run(["bash", "-n", "-c", cmd], check=True)


@pytest.mark.parametrize("change, problem", [
    (lambda c: c["head_start_ray_commands"].__setitem__(
        -1, c["head_start_ray_commands"][-1].replace("127.0.0.1", "0.0.0.0")), "listens on all interfaces"),
    (lambda c: c["head_start_ray_commands"].__setitem__(
        -1, c["head_start_ray_commands"][-1].replace(" --dashboard-host=127.0.0.1", "")), "dashboard"),
    (lambda c: c["worker_start_ray_commands"].__setitem__(
        -1, c["worker_start_ray_commands"][-1].replace("RAY_AUTH_MODE=token ", "")), "without token"),
    (lambda c: c["file_mounts"].pop("~/.ray/auth_token"), "Ray token"),
    (lambda c: c["head_start_ray_commands"].__setitem__(
        2, c["head_start_ray_commands"][2].replace("--app-name basic-auth ", "")), "without basic-auth"),
    (lambda c: c["head_start_ray_commands"].__setitem__(
        2, re.sub(r"--host \S+", "--host 0.0.0.0", c["head_start_ray_commands"][2])), "listens on '0.0.0.0'"),
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
