"""One copy of each checkpoint, top-k only: ``--keep-checkpoints K`` deletes best.pt of the trials outside the top K
after the sweep (everything else stays), and MLflow refers to the kept files instead of storing them again."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import tifffile
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from data_prep import PreparedData
from orchestrator.cli import main
from orchestrator.config import ConfigError, SweepConfig, TrackingConfig
from tests.sweep.conftest import TINY, done_outcome, write_grid


def _trial(root: Path, tid: str, status: str, score: float | None, best: bool = True) -> dict:
    run_dir = root / tid / "checkpoint_000000"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text("{}")
    if best:
        (run_dir / "best.pt").write_bytes(b"w" * 100)
    return {"trial_id": tid, "status": status, "test_dice_volume_mean": score, "run_dir": str(run_dir)}


def test_keep_top_k_deletes_only_the_others_best_pt(tmp_path):
    from orchestrator.sweep.storage import keep_checkpoints as _keep_checkpoints

    df = pd.DataFrame([_trial(tmp_path, "a", "finished", 0.2), _trial(tmp_path, "b", "finished", 0.7),
                       _trial(tmp_path, "c", "diverged", None), _trial(tmp_path, "d", "unfinished", None),
                       _trial(tmp_path, "e", "finished", 0.2)])
    kept, pruned = _keep_checkpoints(df, 2, str(tmp_path))
    # b is best; a and e tie and the grid order decides (a rerun picks the same trials).
    assert kept == {"b": str(tmp_path / "b/checkpoint_000000/best.pt"),
                    "a": str(tmp_path / "a/checkpoint_000000/best.pt")}
    assert set(pruned) == {"c", "e"} and "top 2" in pruned["e"]
    assert {p.parent.parent.name for p in tmp_path.rglob("best.pt")} == {"a", "b", "d"}  # d resumes from its own
    assert len(list(tmp_path.rglob("result.json"))) == 5
    assert _keep_checkpoints(df, 2, str(tmp_path)) == (kept, pruned)  # again: nothing more to delete, same answer
    all_kept, none = _keep_checkpoints(df, None, str(tmp_path))
    assert list(all_kept) == ["b", "a"] and none == {}  # default: keep all (best first)


def test_config_and_cli_option(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        SweepConfig(keep_checkpoints=0)
    with pytest.raises(ConfigError, match="reference, copy"):
        TrackingConfig(log_checkpoints="upload")
    assert SweepConfig().keep_checkpoints is None and TrackingConfig().log_checkpoints == "reference"
    monkeypatch.chdir(tmp_path)
    with mock.patch("orchestrator.sweep.runner.run_sweep", return_value=done_outcome()) as run:
        res = CliRunner().invoke(main, ["sweep", "--grid", "smoke", "--data", str(tmp_path), "--keep-checkpoints", "3"])
    assert res.exit_code == 0, res.output
    assert run.call_args.args[0].keep_checkpoints == 3


@pytest.mark.slow
def test_sweep_keeps_the_top_checkpoint_and_mlflow_refers_to_it(prepared, tmp_path, monkeypatch):
    import mlflow.pyfunc

    from orchestrator.results_schema import top_trials
    from orchestrator.sweep import run_sweep

    grid = write_grid(tmp_path / "keep.csv", [
        {"encoder": "resnet18", "optimizer": "adam", "lr": 1e-3, "epochs": 1, **TINY},
        {"encoder": "resnet18", "optimizer": "sgd", "lr": 1e-2, "epochs": 1, **TINY},
    ])
    cfg = SweepConfig(grid=str(grid), data=str(prepared), storage=str(tmp_path / "sweeps"), keep_checkpoints=1)
    out = run_sweep(cfg, workdir=tmp_path)  # tracking: sqlite:///<tmp_path>/mlflow.db, checkpoints by reference

    df = pd.read_csv(out.results_csv)
    assert set(df["status"]) == {"finished"}
    top = top_trials(df, 1)["trial_id"].iloc[0]
    run_dirs = dict(zip(df["trial_id"], df["run_dir"]))
    assert out.checkpoints == {top: str(Path(run_dirs[top]) / "best.pt")}
    for tid, run_dir in run_dirs.items():
        files = {p.name for p in Path(run_dir).iterdir()}
        assert {"result.json", "per_patient_dice.csv", "learning_curve.png"} <= files  # metrics and plots stay
        assert ("best.pt" in files) == (tid == top)

    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = c.get_experiment_by_name("keep")
    children = {r.data.tags["orch.trial_id"]: r for r in c.search_runs([exp.experiment_id])
                if "mlflow.parentRunId" in r.data.tags}
    assert set(children) == set(run_dirs)
    for tid, run in children.items():
        assert "checkpoints" not in {a.path for a in c.list_artifacts(run.info.run_id)}
        assert run.data.tags["orch.run_dir"] == run_dirs[tid]  # the storage copy, not the trial's scratch dir
        if tid == top:
            assert run.data.tags["orch.checkpoint"] == out.checkpoints[top] and "orch.model_id" in run.data.tags
        else:
            assert "orch.checkpoint" not in run.data.tags and "top 1" in run.data.tags["orch.checkpoint_pruned"]
            assert "orch.model_id" not in run.data.tags  # no checkpoint, no model
    # No checkpoint bytes in the store: the model is a ~1 KB reference, the rest is plots and tables.
    stored = [p for p in (tmp_path / "mlartifacts").rglob("*") if p.is_file()]
    assert not [p for p in stored if p.suffix in (".pt", ".pth")]
    assert sum(p.stat().st_size for p in stored) < Path(out.checkpoints[top]).stat().st_size / 20

    # The model by reference loads through MLflow's own API and through `orch predict`, like the trial itself.
    model_uri = f"models:/{children[top].data.tags['orch.model_id']}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    logits = mlflow.pyfunc.load_model(model_uri).predict(np.zeros((2, 3, 64, 64), dtype=np.float32))
    assert logits.shape == (2, 1, 64, 64)
    source = Path(prepared).parent / "src" / "kaggle_3m"
    patient = PreparedData(prepared).patients("test")[0]
    runner = CliRunner()
    for model, dest in ((run_dirs[top], "from-trial"), (model_uri, "from-mlflow")):
        r = runner.invoke(main, ["predict", model, str(source), str(tmp_path / dest), "--device", "cpu",
                                 "--patient", patient, "--no-overlays"])
        assert r.exit_code == 0, r.output
    masks = sorted((tmp_path / "from-trial").rglob("*_mask.tif"))
    assert masks
    for m in masks:
        assert np.array_equal(tifffile.imread(m), tifffile.imread(tmp_path / "from-mlflow" / m.relative_to(
            tmp_path / "from-trial")))
    pruned = next(t for t in run_dirs if t != top)
    r = runner.invoke(main, ["predict", run_dirs[pruned], str(source), str(tmp_path / "x"), "--device", "cpu"])
    assert r.exit_code != 0 and "no best.pt" in r.output
