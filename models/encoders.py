"""ResNet encoders: one class (torchvision's ``ResNet`` minus its classifier) and a depth table.

Feature contract (written once, here): ``encoder(x)`` for ``x`` of shape (B, C, H, W), H and W multiples of 32,
returns ``depth + 1 = 6`` feature maps, highest resolution first::

    [x (B, C, H, W), stem (B, 64, H/2, W/2), layer1 (B, c1, H/4, W/4), layer2 (B, c2, H/8, W/8),
     layer3 (B, c3, H/16, W/16), layer4 (B, c4, H/32, W/32)]

whose channel counts are ``encoder.out_channels`` (the table's row). Decoders read only ``out_channels``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from models.registry import ENCODER_TABLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderSpec:
    """One row of the encoder table: how to build the ResNet and what it emits."""

    block: type[nn.Module]
    layers: tuple[int, int, int, int]
    out_channels: tuple[int, ...]


_BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}

# The family is the registry's table (models/registry.py), with torchvision's block classes.
ENCODERS: dict[str, EncoderSpec] = {
    name: EncoderSpec(_BLOCKS[row.block], row.layers, row.out_channels) for name, row in ENCODER_TABLE.items()
}


class ResNetEncoder(ResNet):
    """torchvision's ResNet without ``fc``/``avgpool``, returning the six feature maps of the module docstring."""

    def __init__(self, spec: EncoderSpec, in_channels: int = 3):
        super().__init__(spec.block, list(spec.layers))
        del self.fc
        del self.avgpool
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.out_channels = (in_channels, *spec.out_channels[1:])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        f1 = self.relu(self.bn1(self.conv1(x)))  # (B, 64, H/2, W/2)
        f2 = self.layer1(self.maxpool(f1))  # (B, c1, H/4, W/4)
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        f5 = self.layer4(f4)  # (B, c4, H/32, W/32)
        return [x, f1, f2, f3, f4, f5]

    def load_weights(self, path: str | Path) -> None:
        """Load a local torchvision ImageNet state dict (``resnetXX-*.pth``); ``fc.*`` keys are ignored.

        Nothing is ever downloaded: the file must exist. Raises ``FileNotFoundError`` / ``ValueError`` with the
        path and what is wrong."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(
                f"encoder weights file {p} does not exist; pass the path of a torchvision ResNet state dict "
                "(e.g. resnet34-b627a593.pth) or leave weights unset for random initialisation"
            )
        state = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shapes differ: weights of another depth
            raise ValueError(f"encoder weights file {p} does not match this encoder ({str(e)[:200]}...); "
                             "use the torchvision weights of the same depth") from e
        if missing or unexpected:
            raise ValueError(
                f"encoder weights file {p} does not match this encoder: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}); "
                "use the torchvision weights of the same depth"
            )
        log.info("loaded encoder weights from %s", p)
