"""Building a ResNet-UNet from an encoder name or a config, and counting its parameters."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.encoders import ENCODERS, ResNetEncoder
from models.registry import list_encoders
from models.unet import ResNetUNet


def create_model(name_or_config: Any, **kwargs: Any) -> ResNetUNet:
    """Build a ResNet-UNet from an encoder name or a ``ModelConfig``-like object.

    ``kwargs`` (``in_channels``, ``classes``, ``decoder_channels``, ``weights``, ``head_relu``) override the
    config; ``None``
    values are dropped so unset options keep the defaults. Raises ``ValueError`` listing the valid names for an
    unknown encoder."""
    if isinstance(name_or_config, str):
        opts: dict[str, Any] = {"encoder": name_or_config}
    else:
        opts = {
            k: getattr(name_or_config, k)
            for k in ("encoder", "in_channels", "classes", "decoder_channels", "weights", "head_relu")
            if getattr(name_or_config, k, None) is not None
        }
    opts.update({k: v for k, v in kwargs.items() if v is not None})
    name = opts["encoder"]
    if name not in ENCODERS:
        raise ValueError(f"Unknown model encoder {name!r}; valid encoders: {', '.join(list_encoders())}")
    encoder = ResNetEncoder(ENCODERS[name], in_channels=int(opts.get("in_channels", 3)))
    if opts.get("weights"):
        encoder.load_weights(opts["weights"])
    return ResNetUNet(
        encoder,
        decoder_channels=tuple(opts.get("decoder_channels", (256, 128, 64, 32, 16))),
        classes=int(opts.get("classes", 1)),
        head_relu=bool(opts.get("head_relu", False)),
    )


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable and not; BN running stats are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())
