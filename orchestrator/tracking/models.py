"""The best trials as MLflow models: top k by test ``dice_volume_mean``, logged on their own child runs with an
input signature, so ``mlflow.pytorch.load_model(f"models:/{model_id}")`` (or the run's ``model`` path) gives
back the trained network."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.tracking import store

log = logging.getLogger(__name__)

TAG_MODEL = "orch.model_id"  # on a child run whose model was logged: the LoggedModel id (logged once)


def top_trials(results: pd.DataFrame, k: int, metric: str = "test_dice_volume_mean") -> pd.DataFrame:
    """The ``k`` finished trials with the highest ``metric`` (NaN and unfinished ones never qualify)."""
    if metric not in results.columns or "status" not in results.columns:
        return results.iloc[0:0]
    done = results[(results["status"] == "finished") & pd.to_numeric(results[metric], errors="coerce").notna()]
    return done.sort_values(metric, ascending=False).head(k)


def _checkpoint(c, run, row) -> Path | None:
    """The trial's best.pt: the run directory recorded in results.csv or on the run, else the run's artefact."""
    for d in (row.get("run_dir"), run.data.tags.get(store.TAG_RUN_DIR)):
        if isinstance(d, str) and d and (Path(d) / "best.pt").is_file():
            return Path(d) / "best.pt"
    try:
        return Path(c.download_artifacts(run.info.run_id, "checkpoints/best.pt"))
    except Exception as e:  # noqa: BLE001 - a missing checkpoint costs this model, not the sweep
        log.warning("trial %s: no best.pt found (%s); its model is not logged", row.get("trial_id"), e)
        return None


def log_model_from_checkpoint(uri: str, run_id: str, checkpoint: Path) -> str:
    """Log the network in ``checkpoint`` as the MLflow model ``model`` of run ``run_id``; returns its model id.

    Signature: a float32 batch ``(-1, 3, S, S)`` (normalised RGB, S the trial's image size) -> logits
    ``(-1, 1, S, S)``. The network is fully convolutional: any S divisible by 32 works."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from orchestrator.training.checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(checkpoint)
    size = cfg.image_size or 256
    example = np.zeros((1, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, out)
    # mlflow.pytorch.log_model only knows the fluent API (global URI + active run): point it at our store, then
    # restore. set_tracking_uri also writes MLFLOW_TRACKING_URI, which is how a previous URI is remembered.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    pt_log = logging.getLogger("mlflow.pytorch")
    level = pt_log.level
    pt_log.setLevel(logging.ERROR)  # its warning about pickle is the documented choice above, once per model
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model, name="model", signature=signature,
                # pickle: 3.17 defaults to "pt2" (torch.export), which needs an input example and traces the
                # network; pickle needs orch's `models` package at load time, which a user of orch has.
                serialization_format="pickle",
                # Given explicitly: inferring them imports the model in a subprocess (slow) for no gain here.
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "orch"],
            )
            # start_run(run_id=...) ends the run FINISHED on exit: that is the child's state already.
    finally:
        pt_log.setLevel(level)
        mlflow.set_tracking_uri(previous)  # None: back to "not set" (env var removed too)
    return info.model_id


def log_top_models(sweep, results_csv: Path, k: int) -> list[str]:
    """Log the top ``k`` trials of ``results_csv`` as models on their child runs (each at most once)."""
    c = store.client(sweep.uri)
    results = pd.read_csv(results_csv)
    ids = []
    for _, row in top_trials(results, k).iterrows():
        runs = store.find_runs(c, sweep.experiment_id, **{store.TAG_PARENT: sweep.parent_run_id,
                                                          store.TAG_TRIAL: str(row["trial_id"])})
        if not runs:
            log.warning("trial %s has no child run in %s; its model is not logged", row["trial_id"], sweep.uri)
            continue
        run = runs[0]
        if run.data.tags.get(TAG_MODEL):
            ids.append(run.data.tags[TAG_MODEL])
            continue
        ckpt = _checkpoint(c, run, row.to_dict())
        if ckpt is None:
            continue
        model_id = log_model_from_checkpoint(sweep.uri, run.info.run_id, ckpt)
        c.set_tag(run.info.run_id, TAG_MODEL, model_id)
        ids.append(model_id)
        log.info("trial %s: logged as MLflow model %s", row["trial_id"], model_id)
    return ids


def load_logged_model(model_uri: str, tracking_uri: str | None = None):
    """``(network, image size it was trained at or None)`` for an MLflow model URI (``models:/<id>``,
    ``models:/<name>/<version>``, ``runs:/<run id>/model``), resolved against ``tracking_uri`` (default:
    ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``). The image size is the ``image_size`` param of the run that
    logged it (the trial's TrainConfig)."""
    import mlflow
    import mlflow.pytorch

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or store.default_tracking_uri(os.getcwd())
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        try:
            info = mlflow.models.get_model_info(model_uri)
            model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - MLflow raises many types for "not there"; all mean the same
            raise store.TrackingError(f"MLflow model {model_uri} cannot be loaded from {uri} ({e}); check the URI "
                                      "(models:/<model id>, runs:/<run id>/model) and --tracking-uri") from e
        size = None
        if info.run_id:
            value = store.client(uri).get_run(info.run_id).data.params.get("image_size")
            size = int(value) if value not in (None, "", "None") else None
    finally:
        mlflow.set_tracking_uri(previous)
    return model.eval(), size
