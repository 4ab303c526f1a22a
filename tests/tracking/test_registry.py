"""A sweep's top-k models in MLflow's model registry: ``<sweep>-best`` with the aliases ``champion``, ``rank-2``...
in the order of ``results_schema.top_trials``; ``orch predict models:/<sweep>-best@champion`` loads the champion from
the default SQLite store (or the one ``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` names); finishing again registers
no second version and moves the aliases. A real local Ray sweep and a real SQLite store."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.config import SweepConfig
from orchestrator.results_schema import RANK_BY, top_trials
from orchestrator.tracking import SweepTracker
from orchestrator.tracking.models import registered_model_name
from tests.conftest import TINY, write_grid

NAME = "reg"
MODEL = registered_model_name(NAME)


@pytest.mark.parametrize("sweep, name", [("paper", "paper-best"), ("demo.v2+1", "demo.v2+1-best"),
                                         ("cv 2/a:b@c", "cv-2-a-b-c-best"), ("..", "sweep-best")])
def test_registered_model_names_carry_only_uri_safe_characters(sweep, name):
    assert registered_model_name(sweep) == name


def _aliases(c: MlflowClient) -> dict[str, str]:
    return dict(c.get_registered_model(MODEL).aliases)


def _predict(*args: str) -> object:
    return CliRunner().invoke(main, ["predict", *args, "--device", "cpu", "--no-overlays", "--batch-size", "8"])


@pytest.mark.slow
def test_sweep_registers_its_top_models_and_predict_loads_the_champion(prepared, tmp_path, monkeypatch,
                                                                      scratch_runs):
    from orchestrator.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    grid = write_grid(tmp_path / "reg.csv", [{"encoder": "resnet18", "optimizer": o, "lr": lr}
                                            for o, lr in (("adam", 1e-3), ("sgd", 1e-2))])
    cfg = SweepConfig(name=NAME, grid=str(grid), data=str(prepared), storage=str(tmp_path / "sweeps"),
                      overrides={**TINY, "epochs": 1})
    out = run_sweep(cfg, workdir=tmp_path)  # tracking on: sqlite:///<tmp_path>/mlflow.db, top 3 models (of 2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = MlflowClient(uri)

    ranked = list(top_trials(out.results, 3)["trial_id"])  # the one ranking
    assert len(ranked) == 2
    assert len(c.search_model_versions(f"name = '{MODEL}'")) == 2 and set(_aliases(c)) == {"champion", "rank-2"}
    for i, tid in enumerate(ranked):
        mv = c.get_model_version_by_alias(MODEL, "champion" if i == 0 else f"rank-{i + 1}")
        run = c.get_run(mv.run_id)
        assert mv.tags["orch.trial_id"] == tid == run.data.tags["orch.trial_id"]
        assert mv.source == f"models:/{run.data.tags['orch.model_id']}"  # the trial's LoggedModel
        assert float(mv.tags[RANK_BY]) == pytest.approx(run.data.metrics[RANK_BY], rel=1e-5)
    parent = c.search_runs([c.get_experiment_by_name(NAME).experiment_id], "tags.`orch.role` = 'sweep'")[0]
    opened = parent.data.tags["orch.opened_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", opened), opened
    assert datetime.fromisoformat(opened).utcoffset().total_seconds() == 0

    # The default store is ./mlflow.db: run where the sweep ran, no option needed.
    source = Path(prepared).parent / "src"
    res = _predict(f"models:/{MODEL}@champion", str(source), "pred")
    assert res.exit_code == 0, res.output
    assert "predicted" in res.output and list((tmp_path / "pred").rglob("*_mask.tif"))

    # Elsewhere: no store there is an error naming the option (and creates no mlflow.db); --tracking-uri finds it.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = _predict(f"models:/{MODEL}@champion", str(source), "pred")
    assert res.exit_code == 1 and "no MLflow store at" in res.output and "--tracking-uri" in res.output
    assert not (tmp_path / "elsewhere" / "mlflow.db").exists()
    res = _predict(f"models:/{MODEL}@rank-2", str(source), "pred2", "--tracking-uri", uri)
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = _predict(f"models:/{MODEL}@nope", str(source), "pred3")
    assert res.exit_code == 1 and f"registered models there: {MODEL}" in res.output
    assert "models:/<sweep>-best@champion" in res.output and "Traceback" not in res.output

    # Finishing again (a rerun, a --sync) with a reversed ranking and top 1: no new version, the champion moves and
    # rank-2 (held by no model now) goes.
    flipped = out.results.copy()
    flipped[RANK_BY] = flipped["trial_id"].map({tid: float(i) for i, tid in enumerate(ranked)})
    st = SweepTracker.open(uri, experiment=NAME, sweep_name=NAME)
    assert st.finish(out.results_dir, top_k=1, checkpoints=out.checkpoints, results=flipped)
    versions = {mv.tags["orch.trial_id"]: mv.version for mv in c.search_model_versions(f"name = '{MODEL}'")}
    assert len(versions) == 2 and _aliases(c) == {"champion": versions[ranked[1]]}
