"""The best trials as MLflow models: top k by test ``dice_volume_mean``, logged on their own child runs with an
input signature. Both kinds are pyfuncs "from code" (``pyfunc_entry.py`` + orch's ``CheckpointModel``), so nothing
is pickled into the store and loading one unpickles nothing (the checkpoint is read with ``weights_only=True``):

- ``reference`` (default): weight-free (~1 KB), ``model_config["checkpoint"]`` names the trial's ``best.pt`` in the
  sweep storage: ``mlflow.pyfunc.load_model(f"models:/{model_id}")`` loads it from there. A self-contained copy
  costs the checkpoint's size again (57 MB for ResNet18 ... 269 MB for ResNet152; a top-3 up to 0.8 GB).
- ``copy``: self-contained, the checkpoint travels as the model's artifact ``checkpoint``, for stores whose readers
  cannot reach the sweep storage.

The top-k models are also registered (MLflow's model registry, ``register_top_models``) as the versions of one
registered model per sweep, ``<sweep>-best``, with the aliases ``champion`` (the best) and ``rank-2``, ``rank-3``...:
``models:/<sweep>-best@champion`` names the sweep's best model, whatever its id.

``orch predict models:/<sweep>-best@champion`` (or ``models:/<id>``) loads either kind without running any code from
the store (``load_logged_model``): it reads the MLmodel metadata and the checkpoint. Models logged by older orch
releases as pickled ``mlflow.pytorch`` models are refused with a message, never unpickled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.results_schema import RANK_BY, top_trials
from orchestrator.tracking import store

log = logging.getLogger(__name__)

TAG_MODEL = "orch.model_id"  # on a child run whose model was logged: the LoggedModel id (logged once)


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


ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # the model's code (MLflow's "models from code")


def log_reference_model(uri: str, run_id: str, checkpoint: str, image_size: int | None) -> str:
    """Log a weight-free model ``model`` on run ``run_id`` that loads ``checkpoint`` (a path or URI in the sweep
    storage); returns its model id. Nothing is read from the checkpoint: logging costs ~1 KB and no I/O of the
    weights. Signature as ``log_model_from_checkpoint`` (S = ``image_size`` or 256)."""
    return _log_pyfunc(uri, run_id, image_size, model_config={"checkpoint": str(checkpoint)},
                       tags={store.TAG_CHECKPOINT: str(checkpoint)})


def log_model_from_checkpoint(uri: str, run_id: str, checkpoint: Path) -> str:
    """Log the network in ``checkpoint`` as the self-contained MLflow model ``model`` of run ``run_id`` (the
    checkpoint is copied in as the model's artifact); returns its model id.

    Signature: a float32 batch ``(-1, 3, S, S)`` (normalised RGB, S the trial's image size) -> logits
    ``(-1, 1, S, S)``. The network is fully convolutional: any S divisible by 32 works."""
    from orchestrator.training.checkpoint import read_checkpoint

    train_config = read_checkpoint(checkpoint).get("train_config") or {}  # refuses a tampered file before upload
    return _log_pyfunc(uri, run_id, train_config.get("image_size"), artifacts={"checkpoint": str(checkpoint)})


def _log_pyfunc(uri: str, run_id: str, image_size: int | None, **kwargs) -> str:
    import mlflow.pyfunc

    with _fluent_run(uri, run_id, quiet="mlflow.pyfunc"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no input example": the signature says it all
            info = mlflow.pyfunc.log_model(name="model", python_model=str(ENTRY),
                                           signature=_signature(image_size or 256),
                                           pip_requirements=_requirements(), **kwargs)
    return info.model_id


def _requirements() -> list[str]:
    import torch

    # Given explicitly: inferring them imports the model in a subprocess (slow) for no gain here.
    return [f"torch=={torch.__version__.split('+')[0]}", "orch"]


@dataclass(frozen=True)
class TopModel:
    """One of a sweep's top trials whose model is logged: its rank (1 = best, by ``RANK_BY``), trial, child run,
    LoggedModel id and ``RANK_BY`` score."""

    rank: int
    trial_id: str
    run_id: str
    model_id: str
    score: float


def log_top_models(sweep, results: pd.DataFrame, k: int, mode: str = "reference",
                   locations: dict[str, str] | None = None) -> list[TopModel]:
    """Log the top ``k`` trials of ``results`` (the sweep's results.csv rows, ranked by ``top_trials``) as models on
    their child runs (each at most once): by reference to their kept checkpoint (``mode="reference"``) or as
    self-contained copies (``"copy"``). ``locations``: trial id -> kept best.pt, as the sweep recorded them
    (default: found from the runs' tags and run directories). Returns the logged ones, best first."""
    c = store.client(sweep.uri)
    children = store.children_by_trial(c, sweep.experiment_id, sweep.parent_run_id)
    top = []
    for rank, (_, row) in enumerate(top_trials(results, k).iterrows(), start=1):
        run = children.get(str(row["trial_id"]))
        if run is None:
            log.warning("trial %s has no child run in %s; its model is not logged", row["trial_id"], sweep.uri)
            continue
        model_id = run.data.tags.get(TAG_MODEL) or _log_trial_model(sweep.uri, c, run, row, mode, locations)
        if model_id:
            top.append(TopModel(rank, str(row["trial_id"]), run.info.run_id, model_id, float(row[RANK_BY])))
    return top


def _log_trial_model(uri: str, c, run, row: pd.Series, mode: str, locations: dict[str, str] | None) -> str | None:
    """Log one trial's model on its child run and tag the run with its id; None when it kept no checkpoint."""
    location = (locations or {}).get(str(row["trial_id"])) or checkpoint_location(run, row.to_dict())
    if mode == "reference":
        if location is None:
            log.warning("trial %s kept no checkpoint; its model is not logged", row["trial_id"])
            return None
        size = run.data.params.get("image_size")
        model_id = log_reference_model(uri, run.info.run_id, location,
                                       int(size) if size not in (None, "", "None") else None)
    else:
        ckpt = _checkpoint_file(c, run, row.to_dict(), location)
        if ckpt is None:
            return None
        model_id = log_model_from_checkpoint(uri, run.info.run_id, ckpt)
    c.set_tag(run.info.run_id, TAG_MODEL, model_id)
    log.info("trial %s: logged as MLflow model %s (%s)", row["trial_id"], model_id, mode)
    return model_id


CHAMPION = "champion"  # the alias of a sweep's best registered model
_RANK_ALIAS = re.compile(r"^(champion|rank-\d+)$")


def registered_model_name(sweep_name: str) -> str:
    """The registered model holding a sweep's top-k models: ``<sweep name>-best``, with every character a model URI
    cannot carry (all but letters, digits, ``_ . + -``: ``/``, ``:``, ``@``, spaces) replaced by ``-``
    (``cv 2/a`` -> ``cv-2-a-best``)."""
    clean = re.sub(r"[^A-Za-z0-9_.+-]+", "-", sweep_name).strip("-.") or "sweep"
    return f"{clean}-best"


def rank_alias(position: int) -> str:
    """``champion`` for the first registered model, ``rank-<n>`` for the n-th."""
    return CHAMPION if position == 1 else f"rank-{position}"


def register_top_models(uri: str, sweep_name: str, top: list[TopModel]) -> str | None:
    """Register ``top`` (best first) as versions of ``registered_model_name(sweep_name)`` and point the aliases
    ``champion``, ``rank-2``... at them in that order; returns the registered name (None when ``top`` is empty).

    Idempotent: a model registered before (same LoggedModel id) keeps its version, only the aliases move, and a
    rank alias no model holds any more (a rerun with fewer models) is removed. Versions of models that dropped out
    of the top stay, without alias."""
    if not top:
        return None
    c = store.client(uri)
    name = registered_model_name(sweep_name)
    _ensure_registered_model(c, name, sweep_name)
    versions = {mv.model_id or mv.source.removeprefix("models:/"): mv
                for mv in c.search_model_versions(f"name = {store.quote(name)}")}
    aliases = {}
    for position, t in enumerate(top, start=1):
        mv = versions.get(t.model_id) or c.create_model_version(
            name, source=f"models:/{t.model_id}", run_id=t.run_id, model_id=t.model_id,
            tags={store.TAG_SWEEP: sweep_name, store.TAG_TRIAL: t.trial_id, RANK_BY: f"{t.score:.6g}"})
        aliases[rank_alias(position)] = str(mv.version)
    for alias, version in aliases.items():
        c.set_registered_model_alias(name, alias, version)
    for alias in c.get_registered_model(name).aliases:
        if _RANK_ALIAS.match(alias) and alias not in aliases:
            c.delete_registered_model_alias(name, alias)
    log.info("sweep %s: registered %d models as %s (models:/%s@%s is trial %s)", sweep_name, len(top), name, name,
             CHAMPION, top[0].trial_id)
    return name


def _ensure_registered_model(c, name: str, sweep_name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(name, tags={store.TAG_SWEEP: sweep_name},
                                  description=f"The top trials of sweep {sweep_name} by {RANK_BY}; aliases "
                                  f"{CHAMPION} (the best), rank-2, rank-3, ...")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def load_logged_model(model_uri: str, tracking_uri: str | None = None):
    """``(network, image size it was trained at or None)`` for an MLflow model URI (``models:/<sweep>-best@champion``,
    ``models:/<name>/<version>``, ``models:/<id>``, ``runs:/<run id>/model``), resolved against ``tracking_uri``
    (default: ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``). Runs no code from the store: the MLmodel metadata
    (YAML) names the checkpoint (referred to, or the model's own artifact), which is read with ``weights_only=True``."""
    import mlflow

    from orchestrator.tracking.reference import load_reference, reference_of

    uri = store.check_uri(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                          or store.default_tracking_uri(os.getcwd()))
    _check_store_exists(model_uri, uri)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        try:
            info = mlflow.models.get_model_info(model_uri)
        except Exception as e:  # noqa: BLE001 - MLflow raises many types for "not there"; all mean the same
            raise store.TrackingError(_not_found(model_uri, uri, e)) from e
        checkpoint = reference_of(info.flavors)
        with tempfile.TemporaryDirectory(prefix="orch-model-") as tmp:
            if checkpoint is None:
                checkpoint = _download_checkpoint(model_uri, info.flavors, uri, tmp)
            try:
                model, size = load_reference(checkpoint)
            except (OSError, ValueError) as e:
                raise store.TrackingError(f"MLflow model {model_uri} holds or refers to the checkpoint {checkpoint}, "
                                          f"which cannot be loaded ({e})") from e
    finally:
        mlflow.set_tracking_uri(previous)
    return model.eval(), size


_STORE_HINT = "--tracking-uri URI (or MLFLOW_TRACKING_URI; default sqlite:///<current dir>/mlflow.db)"


def _check_store_exists(model_uri: str, uri: str) -> None:
    """A SQLite store that is not there is a wrong directory, not an empty store: say so instead of letting MLflow
    create an empty ``mlflow.db`` where predict happens to run."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise store.TrackingError(f"MLflow model {model_uri}: there is no MLflow store at {uri}; run orch predict in "
                                  f"the directory of the sweep's mlflow.db or pass {_STORE_HINT}")


def _not_found(model_uri: str, uri: str, e: Exception) -> str:
    """The message for a model URI the store cannot resolve: the URI forms and the registered models it holds."""
    try:
        names = [m.name for m in store.client(uri).search_registered_models(max_results=20)]
    except Exception:  # noqa: BLE001 - the listing only helps the message
        names = []
    held = f"; registered models there: {', '.join(names)}" if names else "; no model is registered there"
    return (f"MLflow model {model_uri} cannot be loaded from {uri} ({str(e).splitlines()[0][:300]}){held}. "
            "Use models:/<sweep>-best@champion (or @rank-2 ...), models:/<name>/<version>, models:/<model id> or "
            f"runs:/<run id>/model, and name the store with {_STORE_HINT}")


def _download_checkpoint(model_uri: str, flavors: dict, uri: str, dest: str) -> str:
    """A self-contained model's checkpoint, downloaded (with the rest of the model: metadata and code, a few KB)
    into ``dest``; its path."""
    import mlflow

    artefact = _checkpoint_artefact(flavors)
    if artefact is None:
        raise store.TrackingError(
            f"MLflow model {model_uri} is not an orch checkpoint model (flavors: {', '.join(sorted(flavors))}); orch "
            "loads no pickled model (an mlflow.pytorch model from an older orch is one): pass the trial's best.pt "
            "or run directory instead")
    try:  # the whole model directory: models:/<id>/<subpath> URIs are not resolved by every MLflow store
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dest)
    except Exception as e:  # noqa: BLE001
        raise store.TrackingError(f"MLflow model {model_uri}: its files cannot be downloaded from {uri} ({e})") from e
    return str(Path(local) / artefact)


def _checkpoint_artefact(flavors: dict) -> str | None:
    """The model-relative path of a self-contained model's checkpoint (``artifacts/best.pt``), or None."""
    artefacts = (flavors.get("python_function") or {}).get("artifacts") or {}
    entry = artefacts.get("checkpoint") if isinstance(artefacts, dict) else None
    path = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(path, str) or path.startswith("/") or ".." in Path(path).parts:
        return None
    return path
