"""A TrainConfig is valid when built: names outside the registry or the library's constants are refused at once
(a grid, ``orch train``), not inside a Ray trial; and the CLI offers exactly the library's choices."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from models import list_encoders
from orchestrator import config
from orchestrator.cli import main
from orchestrator.config import ConfigError, TrainConfig


def test_unknown_encoder_is_a_config_error_naming_the_value_and_the_registry():
    with pytest.raises(ConfigError, match=r"encoder='resnet19' is not valid; choose one of: resnet18, resnet34, "
                                          r"resnet50, resnet101, resnet152"):
        TrainConfig(encoder="resnet19")


@pytest.mark.parametrize("field, choices", [("optimizer", config.OPTIMIZERS), ("loss", config.LOSSES),
                                            ("schedule", config.SCHEDULES), ("sampling", config.SAMPLINGS),
                                            ("device", config.DEVICES), ("amp", config.AMPS),
                                            ("cuda_graph", config.CUDA_GRAPHS)])
def test_every_named_field_is_checked_against_its_constant(field, choices):
    with pytest.raises(ConfigError, match=rf"{field}='bogus' is not valid; choose one of: {', '.join(choices)}"):
        TrainConfig(**{field: "bogus"})
    for value in choices:
        assert getattr(TrainConfig(**{field: value}), field) == value


def test_the_registry_and_a_config_import_without_torch():
    code = ("import sys; from orchestrator.config import TrainConfig; from models import list_encoders; "
            "from orchestrator.grids import load_grid; load_grid('paper'); TrainConfig(encoder=list_encoders()[-1]); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_train_command_choices_are_the_librarys_constants():
    train = main.commands["train"]
    choices = {p.name: tuple(p.type.choices) for p in train.params if isinstance(p.type, click.Choice)}
    assert choices == {"encoder": tuple(list_encoders()), "optimizer": config.OPTIMIZERS, "loss": config.LOSSES,
                       "schedule": config.SCHEDULES, "sampling": config.SAMPLINGS, "device": config.DEVICES,
                       "cuda_graph": config.CUDA_GRAPHS}


def test_train_command_refuses_an_unknown_encoder_before_anything_starts(tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--encoder", "resnet19", "--no-tracking"])
    assert res.exit_code == 2 and "resnet19" in res.output and "resnet152" in res.output
    assert not (tmp_path / "runs").exists()
