"""Both cluster files pass Ray's own validator offline (what `ray up` runs before touching a cloud); broken
files are rejected; every key carries a comment."""

from __future__ import annotations

import copy
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
