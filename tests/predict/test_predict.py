"""``orch predict``: LGG-named masks, overlays and the per-patient CSV; the predict -> evaluate round trip
reproduces a run's test metrics; bad MODEL / INPUT give clear errors and write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from data_prep import PreparedData
from orchestrator.cli import main


def test_predict_then_evaluate_reproduces_the_runs_test_metrics(trained, tmp_path):
    root, source, result = trained
    test_patient = PreparedData(root / "prep").patients("test")[0]
    runner = CliRunner()
    out = tmp_path / "pred"
    r = runner.invoke(main, ["predict", str(root / "run"), str(source), str(out), "--device", "cpu",
                             "--patient", test_patient])
    assert r.exit_code == 0, r.output
    folder = next(p for p in source.iterdir() if p.name.startswith(test_patient))
    truth = sorted(folder.glob("*_mask.tif"))
    written = sorted((out / folder.name).glob("*_mask.tif"))
    assert [p.name for p in written] == [p.name for p in truth]  # LGG naming, one mask per slice
    mask = tifffile.imread(written[0])
    assert mask.dtype == np.uint8 and mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 255}
    rows = (out / "patients.csv").read_text().splitlines()
    assert rows[0] == "patient,slices,tumour_slices,tumour_pixels"
    assert rows[1].startswith(folder.name + f",{len(truth)},")

    metrics_file = tmp_path / "eval.json"
    r = runner.invoke(main, ["evaluate", str(out), str(source), "--predicted-patients-only", "--json",
                             str(metrics_file)])
    assert r.exit_code == 0, r.output
    scored = json.loads(metrics_file.read_text())["metrics"]
    for name, value in result.test.items():
        if name in scored:
            assert scored[name] == pytest.approx(value, abs=2e-3), name


def test_overlays_are_written_for_slices_with_predicted_tumour(trained, tmp_path):
    root, source, _ = trained
    from orchestrator.predict import predict_tree

    folder = min(p for p in source.iterdir() if p.is_dir())
    rows = predict_tree(str(root / "run" / "best.pt"), folder, tmp_path / "o", device="cpu", threshold=1e-6)
    overlays = sorted((tmp_path / "o" / "overlays" / folder.name).glob("*.png"))
    assert rows[0]["tumour_slices"] == len(overlays) > 0  # threshold ~0: every slice holds "tumour"


def test_bad_model_and_input_are_clear_errors_and_write_nothing(trained, tmp_path):
    root, source, _ = trained
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(main, ["predict", str(tmp_path / "nope.pt"), str(source), str(out)])
    assert r.exit_code != 0 and "nope.pt" in r.output and "MLflow model URI" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(main, ["predict", str(root / "run"), str(empty), str(out)])
    assert r.exit_code != 0 and "holds no slice images" in r.output
    bad = tmp_path / "bad" / "TCGA_XX_0001_20000101"
    bad.mkdir(parents=True)
    tifffile.imwrite(bad / "TCGA_XX_0001_20000101_1.tif", np.zeros((256, 256, 3), np.uint16))
    r = runner.invoke(main, ["predict", str(root / "run"), str(bad.parent), str(out)])
    assert r.exit_code != 0 and "TCGA_XX_0001_20000101_1.tif" in r.output and "uint16" in r.output
    assert not out.exists()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    r = runner.invoke(main, ["predict", str(junk), str(source), str(out)])
    assert r.exit_code != 0 and "junk.pt" in r.output and "Traceback" not in r.output


def test_an_mlflow_model_uri_predicts_like_its_checkpoint(trained, tmp_path, monkeypatch):
    """MODEL may be an MLflow model URI (what `orch report`/the UI lists for the best trials)."""
    from mlflow import MlflowClient

    from orchestrator.predict import predict_tree
    from orchestrator.tracking import default_tracking_uri
    from orchestrator.tracking.models import log_model_from_checkpoint

    root, source, _ = trained
    uri = default_tracking_uri(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("predict-test", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    client.log_param(run.info.run_id, "image_size", "None")
    model_id = log_model_from_checkpoint(uri, run.info.run_id, root / "run" / "best.pt")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    folder = min(p for p in source.iterdir() if p.is_dir())
    from_uri = predict_tree(f"models:/{model_id}", folder, tmp_path / "a", device="cpu", overlays=False)
    from_ckpt = predict_tree(str(root / "run" / "best.pt"), folder, tmp_path / "b", device="cpu", overlays=False)
    assert from_uri == from_ckpt
    for mask in sorted((tmp_path / "b" / folder.name).glob("*_mask.tif")):
        assert np.array_equal(tifffile.imread(mask), tifffile.imread(tmp_path / "a" / folder.name / mask.name))
