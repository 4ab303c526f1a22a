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
    with pytest.raises(ConfigError, match="head_relu: False stored, True asked.*--no-head-relu"):
        fit(tiny_cfg(epochs=2, head_relu=True), synthetic_prepared, run)
    assert read_checkpoint(run / "last.pt")["epoch"] == 1  # nothing overwritten


class _Payload:
    """Unpickling this runs ``touch <marker>``: what a hostile checkpoint carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _plant(kind: str, path, marker) -> None:
    import pickle

    weights = create_model("resnet18").state_dict()
    if kind == "inside a checkpoint":  # a real-looking checkpoint with one poisoned value
        torch.save({"format": FORMAT, "model_config": {"encoder": "resnet18"}, "train_config": {}, "model": weights,
                    "extra": {"note": _Payload(marker)}}, path)
    elif kind == "as the whole file":
        torch.save(_Payload(marker), path)
    else:  # a plain pickle (torch's legacy, non-zip format)
        with open(path, "wb") as f:
            pickle.dump({"model_config": {}, "model": _Payload(marker)}, f)


@pytest.mark.parametrize("kind", ["inside a checkpoint", "as the whole file", "as a plain pickle"])
def test_a_pickle_payload_in_a_checkpoint_never_runs(tmp_path, kind):
    path, marker = tmp_path / "best.pt", tmp_path / "pwned"
    _plant(kind, path, marker)
    with pytest.raises(ValueError, match=f"checkpoint {path}.*(never runs code|cannot be read)"):
        load_checkpoint(path)
    assert not marker.exists()


def test_orch_predict_refuses_a_poisoned_checkpoint_without_running_it(tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli import main

    path, marker = tmp_path / "best.pt", tmp_path / "pwned"
    _plant("inside a checkpoint", path, marker)
    import numpy as np
    import tifffile

    (tmp_path / "in" / "TCGA_CS_0000_20000101").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "in" / "TCGA_CS_0000_20000101" / "TCGA_CS_0000_20000101_1.tif",
                     np.zeros((256, 256, 3), np.uint8))
    r = CliRunner().invoke(main, ["predict", str(path), str(tmp_path / "in"), str(tmp_path / "out"), "--device",
                                  "cpu"])
    assert r.exit_code != 0 and "never runs code" in r.output and "posix.system" in r.output
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_legacy_numpy_rng_state_still_resumes(tmp_path):
    """A format-2 last.pt held numpy's RNG tuple: weights_only admits exactly that array type, and it restores."""
    import random

    import numpy as np

    from orchestrator.training.checkpoint import set_rng_state

    np.random.seed(3)
    random.seed(3)
    legacy = {"torch": torch.get_rng_state(), "cuda": None, "numpy": np.random.get_state(),
              "python": random.getstate()}
    expected = (np.random.rand(), random.random())
    path = tmp_path / "last.pt"
    torch.save({"format": 2, "model_config": {"encoder": "resnet18"}, "model": {"w": torch.zeros(1)},
                "rng": legacy}, path)
    set_rng_state(read_checkpoint(path)["rng"])
    assert (np.random.rand(), random.random()) == expected
