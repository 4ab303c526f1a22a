"""CUDA-only checks of the captured training step (skipped without a GPU; the same checks ran on an H200 through
benchmarks/gpu_bench.py, see BENCHMARKS.md "Training")."""

from __future__ import annotations

import pytest
import torch

from models import create_model
from orchestrator.bench import synthetic_split
from orchestrator.config import TrainConfig
from orchestrator.training.data import BatchMaker
from orchestrator.training.step import TrainStep, capture, make_loss, make_optimizer, resolve_amp

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _losses(mode: str, optimizer: str, make: BatchMaker, dev: torch.device, steps: int = 10):
    torch.manual_seed(0)
    model = create_model("resnet18").to(dev).to(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), TrainConfig(optimizer=optimizer, lr=1e-4), dev)
    step = TrainStep(model, opt, make_loss("bce"), lambda i, augment: make(i, False), dev, resolve_amp("auto", dev),
                     None, mode=mode)
    out = []
    for k in range(steps):
        step.reset()
        step(torch.arange(8 * (k % 4), 8 * (k % 4) + 8, device=dev))
        out.append(step.loss_sum.clone())
    assert step.mode == mode, step.timings
    return torch.stack(out).cpu()


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_captured_step_equals_eager_step(optimizer):
    dev = torch.device("cuda")
    make = BatchMaker(synthetic_split(32, 128, dev))
    eager, graph = _losses("eager", optimizer, make, dev), _losses("graph", optimizer, make, dev)
    assert torch.isfinite(graph).all()
    assert torch.allclose(eager, graph, rtol=1e-2, atol=1e-4)


def test_augmentation_is_fresh_on_every_replay():
    dev = torch.device("cuda")
    make = BatchMaker(synthetic_split(16, 64, dev))
    idx = torch.arange(16, device=dev)
    g, (x, _) = capture(lambda: make(idx, True))
    g.replay()
    first = x.clone()
    g.replay()
    assert not torch.equal(first, x)
