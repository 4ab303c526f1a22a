"""The code MLflow stores with every orch model ("models from code"): the model is this file plus a checkpoint, so
no Python object is pickled into the store and loading one unpickles nothing.

``mlflow.pyfunc.load_model`` runs this file (from the model's artifacts) to get the ``CheckpointModel``, which then
reads the checkpoint with ``weights_only=True``. ``orch predict`` does not even run this file: it reads the
MLmodel metadata and loads the checkpoint itself (``orchestrator.tracking.models.load_logged_model``). Never import
this module: ``set_model`` is meant for MLflow's loader only.
"""

from mlflow.models import set_model

from orchestrator.tracking.reference import CheckpointModel

set_model(CheckpointModel())
