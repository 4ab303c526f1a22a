"""The demo's scale is enough to learn: a good configuration of the paper grid (ResNet18, Adam, 1e-3), trained
with exactly the overrides ``orch demo`` applies on exactly its synthetic data, finds the tumours of the test
patients; a too-high learning rate does not. The same code path as a demo trial, minus Ray."""

from __future__ import annotations

import pytest

from orchestrator.demo import DemoConfig, prepare_demo_data
from orchestrator.grids import load_grid
from orchestrator.training import fit


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    cfg = DemoConfig(workdir=str(tmp_path_factory.mktemp("demo-data")), workers=1)
    return cfg, prepare_demo_data(cfg)


def _row(cfg: DemoConfig, trial_id: str):
    (entry,) = [e for e in load_grid(cfg.grid, cfg.overrides()) if e.trial_id == trial_id]
    return entry.config.replace(device="cpu")


def test_a_good_paper_configuration_learns_at_demo_scale(demo_data, tmp_path):
    cfg, prepared = demo_data
    result = fit(_row(cfg, "resnet18-adam-lr1e-03"), prepared, tmp_path / "good")
    assert result.status == "finished"
    assert result.test["dice_volume_mean"] >= 0.5, result.test


def test_a_too_high_learning_rate_stays_at_the_baseline_or_diverges(demo_data, tmp_path):
    cfg, prepared = demo_data
    result = fit(_row(cfg, "resnet18-sgd-lr1e-02"), prepared, tmp_path / "high")
    good = fit(_row(cfg, "resnet18-adam-lr1e-03"), prepared, tmp_path / "good")
    assert result.status == "diverged" or result.test["dice_volume_mean"] < good.test["dice_volume_mean"] - 0.2
