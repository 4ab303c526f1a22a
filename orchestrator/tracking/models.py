"""The best trials as MLflow models: top k by test ``dice_volume_mean``, logged on their own child runs with an
input signature. Two kinds, after ``TrackingConfig.log_checkpoints``:

- ``reference`` (default): a weight-free pyfunc (``reference.CheckpointModel``, ~1 KB) pointing at the trial's
  ``best.pt`` in the sweep storage: ``mlflow.pyfunc.load_model(f"models:/{model_id}")`` loads it from there.
  A logged ``mlflow.pytorch`` model always carries its own pickled copy of the weights (``data/model.pth``, as
  large as ``best.pt``: 57 MB for ResNet18 ... 269 MB for ResNet152), so a top-3 of them would add up to 0.8 GB.
- ``copy``: a self-contained ``mlflow.pytorch`` model (``mlflow.pytorch.load_model`` gives back the network),
  for stores whose readers cannot reach the sweep storage.

``orch predict models:/<id>`` loads either kind (``load_logged_model``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
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
    scores = pd.to_numeric(results[metric], errors="coerce")
    done = scores[(results["status"] == "finished") & scores.notna()]
    # Stable: equal scores keep the table's (grid) order, so a rerun picks the same trials.
    return results.loc[done.sort_values(ascending=False, kind="stable").index].head(k)


def checkpoint_location(run, row: dict) -> str | None:
    """Where the trial's best.pt is kept: the run's ``orch.checkpoint`` tag, else best.pt in the run directory that
    results.csv or the run records (when that file exists here). None when the trial kept no checkpoint."""
    loc = run.data.tags.get(store.TAG_CHECKPOINT)
    if loc:
        return loc
    for d in (row.get("run_dir"), run.data.tags.get(store.TAG_RUN_DIR)):
        if isinstance(d, str) and d and "://" not in d and (Path(d) / "best.pt").is_file():
            return str(Path(d) / "best.pt")
    return None


def _checkpoint_file(c, run, row: dict, location: str | None) -> Path | None:
    """A local best.pt to build a self-contained model from: the kept checkpoint, else the run's copied artefact."""
    from orchestrator.tracking.reference import fetch_checkpoint

    try:
        if location:
            return fetch_checkpoint(location)
        return Path(c.download_artifacts(run.info.run_id, "checkpoints/best.pt"))
    except Exception as e:  # noqa: BLE001 - a missing checkpoint costs this model, not the sweep
        log.warning("trial %s: no best.pt found (%s); its model is not logged", row.get("trial_id"), e)
        return None


@contextlib.contextmanager
def _fluent_run(uri: str, run_id: str, quiet: str):
    """The fluent MLflow API (global URI + active run) pointed at ``uri``/``run_id`` and restored afterwards;
    ``quiet``: a logger whose warnings are silenced meanwhile (the documented choices of the callers)."""
    import mlflow

    # set_tracking_uri also writes MLFLOW_TRACKING_URI, which is how a previous URI is remembered.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    logger = logging.getLogger(quiet)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with mlflow.start_run(run_id=run_id):
            yield
            # start_run(run_id=...) ends the run FINISHED on exit: that is the child's state already.
    finally:
        logger.setLevel(level)
        mlflow.set_tracking_uri(previous)  # None: back to "not set" (env var removed too)


def _signature(size: int, out=None):
    """Input ``(-1, 3, S, S)`` float32 -> logits ``(-1, 1, S, S)`` float32."""
    from mlflow.models import infer_signature

    example = np.zeros((1, 3, size, size), dtype=np.float32)
    return infer_signature(example, out if out is not None else np.zeros((1, 1, size, size), dtype=np.float32))


def log_reference_model(uri: str, run_id: str, checkpoint: str, image_size: int | None) -> str:
    """Log a weight-free pyfunc model ``model`` on run ``run_id`` that loads ``checkpoint`` (a path or URI in the
    sweep storage); returns its model id. Nothing is read from the checkpoint: logging costs ~1 KB and no I/O of
    the weights. Signature as ``log_model_from_checkpoint`` (S = ``image_size`` or 256)."""
    import mlflow.pyfunc

    from orchestrator.tracking.reference import CheckpointModel

    with _fluent_run(uri, run_id, quiet="mlflow.pyfunc"):  # its warning: a pickled python_model (orch's class)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no input example": the signature says it all
            info = mlflow.pyfunc.log_model(
                name="model", python_model=CheckpointModel(), model_config={"checkpoint": str(checkpoint)},
                signature=_signature(image_size or 256), pip_requirements=_requirements(),
                tags={store.TAG_CHECKPOINT: str(checkpoint)},
            )
    return info.model_id


def _requirements() -> list[str]:
    import torch

    # Given explicitly: inferring them imports the model in a subprocess (slow) for no gain here.
    return [f"torch=={torch.__version__.split('+')[0]}", "orch"]


def log_model_from_checkpoint(uri: str, run_id: str, checkpoint: Path) -> str:
    """Log the network in ``checkpoint`` as the self-contained MLflow model ``model`` of run ``run_id`` (a copy of
    the weights); returns its model id.

    Signature: a float32 batch ``(-1, 3, S, S)`` (normalised RGB, S the trial's image size) -> logits
    ``(-1, 1, S, S)``. The network is fully convolutional: any S divisible by 32 works."""
    import mlflow.pytorch
    import torch

    from orchestrator.training.checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(checkpoint)
    size = cfg.image_size or 256
    example = np.zeros((1, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    with _fluent_run(uri, run_id, quiet="mlflow.pytorch"):  # its warning about pickle: the choice below
        info = mlflow.pytorch.log_model(
            model, name="model", signature=_signature(size, out),
            # pickle: 3.17 defaults to "pt2" (torch.export), which needs an input example and traces the
            # network; pickle needs orch's `models` package at load time, which a user of orch has.
            serialization_format="pickle", pip_requirements=_requirements(),
        )
    return info.model_id


def log_top_models(sweep, results_csv: Path, k: int, mode: str = "reference",
                   locations: dict[str, str] | None = None) -> list[str]:
    """Log the top ``k`` trials of ``results_csv`` as models on their child runs (each at most once): by reference
    to their kept checkpoint (``mode="reference"``) or as self-contained copies (``"copy"``). ``locations``: trial
    id -> kept best.pt, as the sweep recorded them (default: found from the runs' tags and run directories)."""
    c = store.client(sweep.uri)
    results = pd.read_csv(results_csv)
    children = store.children_by_trial(c, sweep.experiment_id, sweep.parent_run_id)
    ids = []
    for _, row in top_trials(results, k).iterrows():
        run = children.get(str(row["trial_id"]))
        if run is None:
            log.warning("trial %s has no child run in %s; its model is not logged", row["trial_id"], sweep.uri)
            continue
        if run.data.tags.get(TAG_MODEL):
            ids.append(run.data.tags[TAG_MODEL])
            continue
        location = (locations or {}).get(str(row["trial_id"])) or checkpoint_location(run, row.to_dict())
        if mode == "reference":
            if location is None:
                log.warning("trial %s kept no checkpoint; its model is not logged", row["trial_id"])
                continue
            size = run.data.params.get("image_size")
            model_id = log_reference_model(sweep.uri, run.info.run_id, location,
                                           int(size) if size not in (None, "", "None") else None)
        else:
            ckpt = _checkpoint_file(c, run, row.to_dict(), location)
            if ckpt is None:
                continue
            model_id = log_model_from_checkpoint(sweep.uri, run.info.run_id, ckpt)
        c.set_tag(run.info.run_id, TAG_MODEL, model_id)
        ids.append(model_id)
        log.info("trial %s: logged as MLflow model %s (%s)", row["trial_id"], model_id, mode)
    return ids


def load_logged_model(model_uri: str, tracking_uri: str | None = None):
    """``(network, image size it was trained at or None)`` for an MLflow model URI (``models:/<id>``,
    ``models:/<name>/<version>``, ``runs:/<run id>/model``), resolved against ``tracking_uri`` (default:
    ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``). A model by reference loads the checkpoint it names (image size
    from the checkpoint); a self-contained one is unpickled, its image size is the ``image_size`` param of the run
    that logged it (the trial's TrainConfig)."""
    import mlflow
    import mlflow.pytorch

    from orchestrator.tracking.reference import load_reference, reference_of

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or store.default_tracking_uri(os.getcwd())
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        try:
            info = mlflow.models.get_model_info(model_uri)
            checkpoint = reference_of(info.flavors)
            if checkpoint is None:
                model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - MLflow raises many types for "not there"; all mean the same
            raise store.TrackingError(f"MLflow model {model_uri} cannot be loaded from {uri} ({e}); check the URI "
                                      "(models:/<model id>, runs:/<run id>/model) and --tracking-uri") from e
        if checkpoint is not None:  # a model by reference: the sweep's best.pt is the model
            try:
                model, size = load_reference(checkpoint)
            except (OSError, ValueError) as e:
                raise store.TrackingError(f"MLflow model {model_uri} refers to the checkpoint {checkpoint}, which "
                                          f"cannot be read ({e}); pass the trial's directory or another model") from e
            return model.eval(), size
        size = None
        if info.run_id:
            value = store.client(uri).get_run(info.run_id).data.params.get("image_size")
            size = int(value) if value not in (None, "", "None") else None
    finally:
        mlflow.set_tracking_uri(previous)
    return model.eval(), size
