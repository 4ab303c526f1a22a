"""Checkpoints from before ``head_relu`` existed (format 1) were trained with the ReLU in front of the head; they
must load as that model, and a run must not resume its weights into the other one (same keys, other function)."""

from __future__ import annotations

import pytest
import torch

from models import create_model
from orchestrator.config import ConfigError
from orchestrator.training import fit, load_checkpoint
from orchestrator.training.checkpoint import FORMAT, read_checkpoint
from tests.training.training_helpers import tiny_cfg


def test_format1_checkpoint_loads_with_the_head_relu(tmp_path):
    torch.manual_seed(0)
    old = create_model("resnet18", head_relu=True).eval()
    cfg = tiny_cfg().to_dict()
    del cfg["head_relu"]
    model_cfg = {"encoder": "resnet18", "in_channels": 3, "classes": 1, "decoder_channels": [256, 128, 64, 32, 16],
                 "weights": None}
    path = tmp_path / "best.pt"
    torch.save({"format": 1, "model_config": model_cfg, "train_config": cfg, "model": old.state_dict()}, path)

    model, train_cfg, _ = load_checkpoint(path)
    assert train_cfg.head_relu is True
    assert isinstance(model.decoder.blocks[-1].conv2[2], torch.nn.ReLU)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), old(x))


def test_new_checkpoints_record_head_relu_and_resume_refuses_the_other_model(synthetic_prepared, tmp_path):
    run = tmp_path / "run"
    fit(tiny_cfg(epochs=1), synthetic_prepared, run)
    ckpt = read_checkpoint(run / "last.pt")
    assert ckpt["format"] == FORMAT >= 2
    assert ckpt["model_config"]["head_relu"] is False and ckpt["train_config"]["head_relu"] is False
    (run / "result.json").unlink()  # make the run resumable instead of finished
    with pytest.raises(ConfigError, match="head_relu=False.*--no-head-relu"):
        fit(tiny_cfg(epochs=2, head_relu=True), synthetic_prepared, run)
    assert read_checkpoint(run / "last.pt")["epoch"] == 1  # nothing overwritten
