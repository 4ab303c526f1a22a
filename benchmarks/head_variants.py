"""Probe for the head trap (BENCHMARKS.md, "Still open"): train the default recipe with a variant of the head's
input and print validation dice_volume_mean per epoch and the test figure. Variants: ``base`` (as shipped),
``no_last_relu`` (the last decoder conv's BN output goes to the head without a ReLU), ``bias0`` (head bias
initialised at 0). Not a product path: it patches the model ``fit`` builds.

    python benchmarks/head_variants.py no_last_relu PREPARED --image-size 64 --epochs 15
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
    ap.add_argument("variant", choices=["base", "no_last_relu", "bias0"])
    ap.add_argument("prepared")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    build = loop.create_model

    def patched(cfg):
        model = build(cfg)
        if args.variant == "no_last_relu":
            model.decoder.blocks[-1].conv2[2] = nn.Identity()
        elif args.variant == "bias0":
            nn.init.zeros_(model.segmentation_head.bias)
        return model

    loop.create_model = patched
    cfg = TrainConfig(encoder="resnet18", image_size=args.image_size, epochs=args.epochs, device="cpu")
    r = fit(cfg, args.prepared, Path(tempfile.mkdtemp()) / "run")
    print(args.variant, "val per epoch", [round(h["dice_volume_mean"], 2) for h in r.history],
          "test", round(r.test["dice_volume_mean"], 3))


if __name__ == "__main__":
    main()
