"""Grids are data: the paper grid is exactly the study's 45 configurations; bad grids fail loudly."""

from __future__ import annotations

import itertools

import pytest

from models import list_encoders
from orchestrator.config import TrainConfig
from orchestrator.grids import GridError, list_grids, load_grid
from orchestrator.recipe import PAPER_SETTINGS
from tests.sweep.conftest import write_grid


def test_paper_grid_is_the_45_configurations_of_the_study():
    entries = load_grid("paper")
    keys = {(e.config.encoder, e.config.optimizer, e.config.lr) for e in entries}
    expected = set(itertools.product([f"resnet{d}" for d in (18, 34, 50, 101, 152)], ["adam", "sgd", "rmsprop"],
                                     [1e-2, 1e-3, 1e-4]))
    assert len(entries) == 45 and keys == expected
    assert len({e.trial_id for e in entries}) == 45
    assert {(e.config.epochs, e.config.loss) for e in entries} == {(50, "bce")}


def test_paper_grid_pins_every_recipe_lever_to_the_papers_setting():
    # The recipe's defaults may change; the paper grid must not change with them.
    for e in load_grid("paper"):
        assert {k: getattr(e.config, k) for k in PAPER_SETTINGS} == PAPER_SETTINGS, e.trial_id


def test_recipe_grid_is_the_default_recipe_at_every_depth():
    entries = load_grid("recipe")
    assert [e.config.encoder for e in entries] == list_encoders()
    assert all(e.config == TrainConfig(encoder=e.config.encoder) for e in entries)


def test_smoke_grid_is_tiny():
    entries = load_grid("smoke")
    assert len(entries) >= 4
    assert all(e.config.epochs <= 2 and e.config.max_steps and e.config.image_size <= 64 for e in entries)


def test_overrides_apply_to_every_row_and_are_validated():
    entries = load_grid("paper", overrides={"epochs": 3, "batch_size": None, "loss": "dice"})
    assert {(e.config.epochs, e.config.loss, e.config.batch_size) for e in entries} == {(3, "dice", 16)}
    with pytest.raises(GridError, match="epochs=0"):
        load_grid("smoke", overrides={"epochs": 0})
    with pytest.raises(GridError, match="not training options"):
        load_grid("smoke", overrides={"colour": "red"})


def test_unknown_grid_lists_the_valid_names():
    assert {"paper", "recipe", "smoke"} <= set(list_grids())
    with pytest.raises(GridError, match=f"valid grids: {', '.join(sorted(list_grids()))}"):
        load_grid("papre")


def test_grid_file_errors_name_file_line_and_column(tmp_path):
    bad_col = write_grid(tmp_path / "a.csv", [{"encoder": "resnet18", "colour": "red"}])
    with pytest.raises(GridError, match=r"a\.csv: unknown column\(s\) colour"):
        load_grid(bad_col)
    bad_val = write_grid(tmp_path / "b.csv", [{"encoder": "resnet18", "lr": 1e-3}, {"encoder": "resnet18", "lr": "x"}])
    with pytest.raises(GridError, match=r"b\.csv line 3: column lr='x'"):
        load_grid(bad_val)
    dup = write_grid(tmp_path / "c.csv", [{"encoder": "resnet18", "loss": "bce"},
                                          {"encoder": "resnet18", "loss": "dice"}])
    with pytest.raises(GridError, match="repeats line 2"):
        load_grid(dup)
    named = write_grid(tmp_path / "d.csv", [{"encoder": "resnet18", "loss": "bce", "trial_id": "a"},
                                            {"encoder": "resnet18", "loss": "dice", "trial_id": "b"}])
    assert [e.trial_id for e in load_grid(named)] == ["a", "b"]
    with pytest.raises(GridError, match="does not exist"):
        load_grid(tmp_path / "missing.csv")


def test_grid_cells_become_typed_fields(tmp_path):
    g = write_grid(tmp_path / "t.csv", [{"encoder": "resnet18", "max_steps": 2, "augment": "false", "lr": "1e-4"}])
    (e,) = load_grid(g)
    assert e.config == TrainConfig(encoder="resnet18", max_steps=2, augment=False, lr=1e-4)


def test_grid_row_with_an_unknown_encoder_is_refused_before_anything_runs(tmp_path):
    bad = write_grid(tmp_path / "e.csv", [{"encoder": "resnet18"}, {"encoder": "resnet19"}])
    with pytest.raises(GridError, match=r"e\.csv line 3: encoder='resnet19' is not valid; choose one of: resnet18"):
        load_grid(bad)
