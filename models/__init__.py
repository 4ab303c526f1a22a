"""The ResNet-UNet family: ``create_model("resnet34")`` or ``create_model(ModelConfig(...))``.

No weights are downloaded: encoders start random unless a local torchvision weights file is given.
This package never imports ``orchestrator``; a config is read by attribute (``encoder``, ``in_channels``,
``classes``, ``decoder_channels``, ``weights``, ``head_relu``).

The registry's names (``list_encoders``, models/registry.py) and the normalisation constants import without
torch; everything that needs torch (``ENCODERS``, ``create_model``, the modules) is imported on first use, so a
configuration can validate an encoder name in a process that never trains (a sweep driver, ``orch sweep
--dry-run``).
"""

from __future__ import annotations

import importlib
from typing import Any

from models.registry import ENCODER_TABLE, list_encoders

# Input normalisation (ImageNet statistics, so optional ImageNet encoder weights see what they were trained on).
NORMALIZE_MEAN = (0.485, 0.456, 0.406)
NORMALIZE_STD = (0.229, 0.224, 0.225)

# name -> the module defining it, imported on first access (PEP 562)
_LAZY = {
    "ENCODERS": "models.encoders",
    "EncoderSpec": "models.encoders",
    "ResNetEncoder": "models.encoders",
    "ResNetUNet": "models.unet",
    "UnetDecoder": "models.unet",
    "count_parameters": "models.factory",
    "create_model": "models.factory",
}

__all__ = [
    "ENCODERS",
    "ENCODER_TABLE",
    "EncoderSpec",
    "NORMALIZE_MEAN",
    "NORMALIZE_STD",
    "ResNetEncoder",
    "ResNetUNet",
    "UnetDecoder",
    "count_parameters",
    "create_model",
    "list_encoders",
]


def __getattr__(name: str) -> Any:
    """The torch-backed names, imported from their module on first access (then cached in this module)."""
    try:
        home = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'models' has no attribute {name!r}") from None
    globals()[name] = value = getattr(importlib.import_module(home), name)
    return value
