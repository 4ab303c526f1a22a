"""Diagnose the predict-nothing trap of a trained checkpoint: per split, the highest and mean tumour probability
inside and outside the true masks (eval and train mode), and the segmentation head's bias and per-channel weight
sums. A maximum stuck at sigmoid(head bias) < 0.5 means tumour is marked by switching every decoder feature off.

    python benchmarks/head_trap.py RUN_DIR/best.pt PREPARED_DIR
"""

from __future__ import annotations

import sys

import torch

from orchestrator.training import load_checkpoint
from orchestrator.training.data import load_split, normalise, open_data
from orchestrator.training.inference import forward_logits


def main(ckpt: str, prepared: str) -> None:
    model, cfg, _ = load_checkpoint(ckpt)
    head = model.segmentation_head
    print(f"head bias {head.bias.item():+.4f} -> sigmoid {torch.sigmoid(head.bias).item():.3f}; weight sum per "
          f"input channel {[round(v, 2) for v in head.weight.sum(dim=(0, 2, 3)).tolist()]}")
    data = open_data(prepared, cfg)
    for split in ("train", "val", "test"):
        s = load_split(data, split, torch.device("cpu"), cfg.image_size)
        x = normalise(s.images)
        tumour = s.masks.bool()
        for mode in ("eval", "train"):
            model.train(mode == "train")
            with torch.no_grad():
                p = torch.sigmoid(forward_logits(model, x, None)).squeeze(1)
            print(f"{split:5s} {mode:5s} max p {p.max():.3f}; in tumour mean {p[tumour].mean():.3f}, "
                  f">= 0.5 {(p[tumour] >= 0.5).float().mean():.3f}; outside mean {p[~tumour].mean():.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
