"""The demo's scale is enough to learn: configurations of the paper grid, trained with exactly the overrides
``orch demo`` applies on exactly its synthetic data (the code path of a demo trial, minus Ray). A good one finds
the test patients' tumours; a too-high learning rate does not."""

from __future__ import annotations

import pytest

from orchestrator.demo import DemoConfig, prepare_demo_data
from orchestrator.grids import load_grid
from orchestrator.training import fit


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cfg = DemoConfig(workdir=str(tmp_path_factory.mktemp("demo-data")), workers=1)
    prepared = prepare_demo_data(cfg)
    rows = {e.trial_id: e.config.replace(device="cpu") for e in load_grid(cfg.grid, cfg.overrides())}
    out = tmp_path_factory.mktemp("demo-runs")
    return lambda trial_id: fit(rows[trial_id], prepared, out / trial_id)


def test_a_good_paper_configuration_learns_at_demo_scale(demo):
    result = demo("resnet18-adam-lr1e-03")
    assert result.status == "finished"
    assert result.test["dice_volume_mean"] >= 0.5, result.test


def test_a_too_high_learning_rate_does_not(demo):
    good, high = demo("resnet18-adam-lr1e-03"), demo("resnet18-adam-lr1e-02")
    assert high.status == "diverged" or high.test["dice_volume_mean"] < good.test["dice_volume_mean"] - 0.3, high.test
