"""Probe for the head trap (BENCHMARKS.md, "The head trap"): train the default recipe with a variant of the head's
input and print validation dice_volume_mean per epoch and the test figure. Variants: ``base`` (as shipped: no ReLU
in front of the head), ``head_relu`` (segmentation_models_pytorch's U-Net: the last decoder conv's BN output goes to
the head through a ReLU), ``head_relu_bias0`` (that, with the head's bias initialised at 0). The last one patches
the model ``fit`` builds: not a product path.

    python benchmarks/head_variants.py head_relu PREPARED --image-size 64 --epochs 15
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

import orchestrator.training.loop as loop
from orchestrator.config import TrainConfig
from orchestrator.training import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant", choices=["base", "head_relu", "head_relu_bias0"])
    ap.add_argument("prepared")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.variant == "head_relu_bias0":
        build = loop.create_model

        def patched(cfg):
            model = build(cfg)
            nn.init.zeros_(model.segmentation_head.bias)
            return model

        loop.create_model = patched
    cfg = TrainConfig(encoder="resnet18", image_size=args.image_size, epochs=args.epochs, device="cpu",
                      head_relu=args.variant != "base")
    r = fit(cfg, args.prepared, Path(tempfile.mkdtemp()) / "run")
    print(args.variant, "val per epoch", [round(h["dice_volume_mean"], 2) for h in r.history],
          "test", round(r.test["dice_volume_mean"], 3))


if __name__ == "__main__":
    main()
