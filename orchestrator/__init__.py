"""orch: a Ray-distributed experiment orchestrator for ResNet-UNet segmentation of the LGG brain-MRI dataset.

Importing this package imports neither Ray nor MLflow: the training loop also runs where only torch is installed.
"""

__version__ = "0.1.0"
