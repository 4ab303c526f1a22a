"""The U-Net decoder of segmentation_models_pytorch and the assembled ``ResNetUNet``.

The decoder knows its encoder only through ``encoder_channels`` (the encoder's ``out_channels``): it drops the
full-resolution input map, walks the rest deepest first, and does the channel arithmetic itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Conv2dReLU(nn.Sequential):
    """3x3 conv (no bias: BN follows) -> BatchNorm -> ReLU (``relu=False``: an Identity in its place, so the
    state-dict keys are the same either way)."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )


class DecoderBlock(nn.Module):
    """Nearest 2x upsampling, concatenation with the skip map (if any), two Conv2dReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, final_relu: bool = True):
        super().__init__()
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels)
        self.conv2 = Conv2dReLU(out_channels, out_channels, relu=final_relu)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UnetDecoder(nn.Module):
    """Five decoder blocks from the deepest encoder map up to full resolution. ``final_relu``: whether the last
    block's output passes through its ReLU (segmentation_models_pytorch: yes)."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                 final_relu: bool = True):
        super().__init__()
        if len(decoder_channels) != len(encoder_channels) - 1:
            raise ValueError(
                f"decoder_channels {tuple(decoder_channels)} needs {len(encoder_channels) - 1} entries "
                f"for an encoder with out_channels {tuple(encoder_channels)}"
            )
        enc = list(encoder_channels[1:])[::-1]  # deepest first, without the input map
        in_ch = [enc[0], *decoder_channels[:-1]]
        skip_ch = [*enc[1:], 0]  # the last block reaches full resolution: nothing to concatenate
        last = len(decoder_channels) - 1
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o, final_relu=final_relu or k < last)
            for k, (i, s, o) in enumerate(zip(in_ch, skip_ch, decoder_channels, strict=True))
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = list(features[1:])[::-1]  # deepest first
        x, skips = feats[0], feats[1:]
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return x


class ResNetUNet(nn.Module):
    """Encoder + U-Net decoder + a 3x3 conv head giving ``classes`` logit maps at input resolution.

    ``forward(x)``: (B, C, H, W) float -> (B, classes, H, W) logits. The sigmoid is applied by callers for
    probabilities and metrics, never inside the loss (losses take logits).

    ``head_relu``: whether the head sees the last decoder conv through a ReLU, as in segmentation_models_pytorch's
    U-Net (the paper's model). Off by default: with it, the head's inputs are all >= 0, and a model that learns to
    mark tumour by switching every feature off (as ResNet18 does on the 12-patient sample) can give a tumour pixel
    no logit above the head's bias, i.e. no probability above sigmoid(bias) ~ 0.48: it predicts nothing for good
    (BENCHMARKS.md, "The head trap"). Without it, the head reads the BatchNorm output, which can carry either sign.
    The parameters and state-dict keys are the same either way."""

    def __init__(self, encoder: nn.Module, decoder_channels: Sequence[int] = (256, 128, 64, 32, 16), classes: int = 1,
                 head_relu: bool = False):
        super().__init__()
        self.encoder = encoder
        self.decoder = UnetDecoder(encoder.out_channels, decoder_channels, final_relu=head_relu)
        self.segmentation_head = nn.Conv2d(decoder_channels[-1], classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))
