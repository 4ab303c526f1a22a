"""``orch bench`` measures the loop's own step: it builds it with ``make_train_step``, the factory ``fit`` uses;
its encoders and H200 ceilings are the registry's."""

from __future__ import annotations

import torch

import orchestrator.bench as bench
import orchestrator.training.loop as loop
from models import list_encoders
from orchestrator.bench import BenchConfig, bench_config, run_bench
from orchestrator.training import step as step_module


def test_bench_and_fit_build_the_step_with_the_same_factory(monkeypatch, tmp_path):
    assert bench.make_train_step is loop.make_train_step is step_module.make_train_step
    built = []

    def spy(cfg, parts, model, split, device, world=1):
        built.append((cfg, parts))
        return step_module.make_train_step(cfg, parts, model, split, device, world)

    monkeypatch.setattr(bench, "make_train_step", spy)
    cfg = BenchConfig(encoders=("resnet18",), batch_size=2, image_size=32, steps=1, warmup=1, slices=4, device="cpu",
                      variants=("loop",))
    (row,) = run_bench(cfg)
    assert row["loop_img_per_s"] > 0 and row["loop_mode"] == "eager"
    ((tcfg, parts),) = built
    assert (tcfg.encoder, tcfg.optimizer, tcfg.lr, tcfg.loss, tcfg.batch_size) == ("resnet18", "adam", 1e-4, "bce", 2)
    assert isinstance(parts.optimizer, torch.optim.Adam) and parts.scaler is None


def test_bench_encoders_and_ceilings_are_registry_encoders():
    assert BenchConfig().encoders == tuple(list_encoders())
    assert set(bench.H200_CEILING) <= set(list_encoders())
    assert bench_config(",".join(list_encoders()), device="cpu").encoders == tuple(list_encoders())


def test_bench_config_refuses_an_unknown_encoder():
    import pytest

    from orchestrator.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown encoders \['resnet19'\]; choose from resnet18"):
        bench_config("resnet18,resnet19", device="cpu")
