"""Checks that run before Ray starts: data, --resume without a sweep, a rerun whose grid changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.config import ConfigError, SweepConfig
from orchestrator.grids import load_grid
from orchestrator.sweep import run_sweep
from orchestrator.sweep import storage as st
from orchestrator.sweep.plan import plan_sweep


def test_data_must_be_a_prepared_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json.*orch prep"):
        run_sweep(SweepConfig(grid="smoke", data=str(tmp_path), storage=str(tmp_path / "s")), tracking=None)
    assert st.check_data("s3://bucket/prepared") == "s3://bucket/prepared"  # read by the trials themselves


def test_resume_requires_an_existing_sweep(prepared, tmp_path):
    cfg = SweepConfig(grid="smoke", data=str(prepared), storage=str(tmp_path / "s"), resume=True)
    with pytest.raises(ConfigError, match="no sweep 'smoke' to resume"):
        run_sweep(cfg, tracking=None)
    assert not (tmp_path / "s").exists()  # nothing half-written


def test_rerun_with_other_configurations_is_refused(tmp_path):
    exp = str(tmp_path / "smoke")
    plans = plan_sweep(SweepConfig(), load_grid("smoke"), use_gpus=False)
    st.check_plan(exp, "orch-sweep.json", plans, "smoke")
    recorded = json.loads((tmp_path / "smoke" / "orch-sweep.json").read_text())
    assert [t["trial_id"] for t in recorded["trials"]] == [p.trial_id for p in plans]
    st.check_plan(exp, "orch-sweep.json", plans, "smoke")  # same plan: fine
    longer = plan_sweep(SweepConfig(), load_grid("smoke", {"epochs": 9}), use_gpus=False)
    with pytest.raises(ConfigError, match=r"other configurations .*epochs: 2 -> 9.*choose a new --name"):
        st.check_plan(exp, "orch-sweep.json", longer, "smoke")


def test_storage_paths_and_uris(tmp_path):
    assert st.resolve_storage("", tmp_path) == str(tmp_path / "sweeps")
    assert st.resolve_storage("s3://b/x/", tmp_path) == "s3://b/x"
    assert st.join("s3://b/x", "paper") == "s3://b/x/paper" and st.join("/a", "b") == "/a/b"
    assert not st.restorable(str(tmp_path / "nothing"))


def test_data_from_a_uri_is_copied_once_per_node(prepared, tmp_path):
    from orchestrator.sweep.trial import local_data

    uri = f"file://{prepared}"
    local = local_data(uri)
    assert local.startswith(str(tmp_path / "runs" / "data"))  # ORCH_RUNS_DIR (tests/sweep/conftest.py)
    assert sorted(p.name for p in Path(local).iterdir()) == sorted(p.name for p in prepared.iterdir())
    assert local_data(uri) == local and local_data(str(prepared)) == str(prepared)
