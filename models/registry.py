"""The encoder registry as plain data: names, block kind, layer counts and out_channels of every depth.

No torch here, so a configuration (``orchestrator.config``), a grid loader or a sweep planner can check an encoder
name without importing torch. ``models.encoders.ENCODERS`` builds its specs from this table: adding a depth is
adding a row here.
"""

from __future__ import annotations

from dataclasses import dataclass

_BASIC = (3, 64, 64, 128, 256, 512)
_BOTTLENECK = (3, 64, 256, 512, 1024, 2048)


@dataclass(frozen=True)
class EncoderRow:
    """One depth: torchvision's block kind (``basic`` or ``bottleneck``) and layer counts, smp's out_channels."""

    block: str
    layers: tuple[int, int, int, int]
    out_channels: tuple[int, ...]


ENCODER_TABLE: dict[str, EncoderRow] = {
    "resnet18": EncoderRow("basic", (2, 2, 2, 2), _BASIC),
    "resnet34": EncoderRow("basic", (3, 4, 6, 3), _BASIC),
    "resnet50": EncoderRow("bottleneck", (3, 4, 6, 3), _BOTTLENECK),
    "resnet101": EncoderRow("bottleneck", (3, 4, 23, 3), _BOTTLENECK),
    "resnet152": EncoderRow("bottleneck", (3, 8, 36, 3), _BOTTLENECK),
}


def list_encoders() -> list[str]:
    """Registered encoder names, shallowest first."""
    return list(ENCODER_TABLE)
