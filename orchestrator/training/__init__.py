"""The one training loop and what it reports (contracts: docs/design.md).

``fit(cfg, data, run_dir, on_epoch)`` trains one configuration; ``load_checkpoint`` rebuilds a trained model from
a checkpoint alone; ``predict_masks`` turns uint8 images into tumour probabilities. No Ray or MLflow in here.
"""

from orchestrator.training.checkpoint import load_checkpoint
from orchestrator.training.inference import evaluate_split, predict_masks
from orchestrator.training.loop import fit
from orchestrator.training.outcome import EpochReport, TrainResult

__all__ = ["EpochReport", "TrainResult", "evaluate_split", "fit", "load_checkpoint", "predict_masks"]
