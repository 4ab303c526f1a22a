"""Resources per trial (no Ray): GPU shares by depth, overrides, the Ray Train path, CPU-only machines."""

from __future__ import annotations

import pytest

from orchestrator.config import ConfigError, SweepConfig
from orchestrator.grids import load_grid
from orchestrator.sweep import dry_run
from orchestrator.sweep.plan import WAITER_CPUS, TrialPlan, default_max_concurrent, plan_sweep, trial_process_reuse


def _by_encoder(plans):
    return {p.config.encoder: p for p in plans}


def test_default_gpu_share_packs_small_models_and_isolates_resnet152():
    plans = plan_sweep(SweepConfig(grid="paper"), load_grid("paper"), use_gpus=True)
    share = {e: p.gpus for e, p in _by_encoder(plans).items()}
    assert share == {"resnet18": 0.25, "resnet34": 0.25, "resnet50": 0.5, "resnet101": 0.5, "resnet152": 1.0}
    assert all(p.workers == 0 and p.tune_resources() == {"CPU": 1.0, "GPU": p.gpus} for p in plans)
    # Largest first, so the long trials do not start last.
    assert [p.config.encoder for p in plans[:9]] == ["resnet152"] * 9
    assert plans[-1].config.encoder == "resnet18"


def test_cpu_only_cluster_runs_trials_on_cpus():
    plans = plan_sweep(SweepConfig(grid="paper", cpus_per_trial=2), load_grid("paper"), use_gpus=False)
    assert {(p.gpus, p.cpus, p.workers) for p in plans} == {(0.0, 2.0, 0)}
    assert default_max_concurrent(plans, {"CPU": 8.0}) == 4
    assert trial_process_reuse(plans)  # a CPU trial's process runs the next one
    assert not trial_process_reuse(plans, "asha")  # not the process of a trial the scheduler stopped


def test_trials_with_gpus_or_ray_train_get_a_fresh_process():
    assert not trial_process_reuse(plan_sweep(SweepConfig(grid="paper"), load_grid("paper"), use_gpus=True))
    assert not trial_process_reuse(plan_sweep(SweepConfig(launcher="train"), load_grid("smoke"), use_gpus=False))


def test_gpus_per_trial_override_and_ddp_through_ray_train():
    half = plan_sweep(SweepConfig(gpus_per_trial=0.5), load_grid("smoke"), use_gpus=True)
    assert {p.gpus for p in half} == {0.5}
    ddp = plan_sweep(SweepConfig(gpus_per_trial=2), load_grid("smoke"), use_gpus=True)
    p = ddp[0]
    assert (p.workers, p.gpus_per_worker, p.launcher) == (2, 1.0, "train")
    assert p.tune_resources() == {"CPU": WAITER_CPUS}  # the Tune function only waits on its trainer
    # Trainers reserve nothing through Tune, so concurrency is bounded by the cluster's GPUs.
    assert default_max_concurrent(ddp, {"CPU": 64.0, "GPU": 8.0}) == 4
    with pytest.raises(ConfigError, match="whole number"):
        plan_sweep(SweepConfig(gpus_per_trial=1.5), load_grid("smoke"), use_gpus=True)
    with pytest.raises(ConfigError, match="launcher inprocess"):
        plan_sweep(SweepConfig(gpus_per_trial=2, launcher="inprocess"), load_grid("smoke"), use_gpus=True)


def test_plan_round_trips_through_the_trial_config():
    for p in plan_sweep(SweepConfig(launcher="train"), load_grid("smoke"), use_gpus=False):
        assert TrialPlan.from_dict(p.to_dict()) == p and p.workers == 1


def test_dry_run_plans_for_the_target_cluster():
    local = dry_run(SweepConfig(grid="smoke"), gpus=0)
    cluster = dry_run(SweepConfig(grid="smoke", address="auto"))
    assert {p.gpus for p in local} == {0.0}
    assert {p.gpus for p in cluster} == {0.25}


def test_default_gpu_share_covers_exactly_the_encoder_registry():
    from models import list_encoders
    from orchestrator.sweep.plan import DEFAULT_GPU_SHARE

    assert list(DEFAULT_GPU_SHARE) == list_encoders()
