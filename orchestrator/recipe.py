"""orch's training recipe against the paper's settings.

``TrainConfig``'s defaults *are* the recipe (what ``orch train`` runs and what the ``recipe`` grid pins); a lever is
on by default only where a measurement on the real LGG data showed that it helps (BENCHMARKS.md, "Recipe": one
change at a time from the recipe, ResNet18 at 64 px, 6 epochs, JPEG q90 copy of all 110 patients):

- loss ``bce_dice`` (BCE + soft Dice on the logits): pixel-mean BCE alone keeps every pixel of a 1 %-tumour
  dataset under 0.5 and scores 0.000; Dice alone: -0.065.
- sampling ``tumour`` (half of the drawn slices hold tumour, as Buda et al. oversample): uniform -0.064.
- schedule ``cosine`` after a linear warm-up (``warmup_epochs``): constant -0.049.
- optimizer ``adamw``, weight decay 1e-4: Adam without decay -0.007 (noise level; kept, harmless).
- model ``head_relu=False`` (no ReLU between the last decoder conv and the head): with it, the 12-patient sample
  predicts nothing for 15 epochs (0.000 vs 0.708 test); on the full data 0.706 without it vs 0.715 with it (noise).
- off by default, available: ``intensity_aug`` (-0.021), ``tta`` (+0.004 at 64 px, -0.002 at 128 px),
  ``min_component`` (no change at 64 or 128 px: the models' false positives are not small isolated components).

The paper's settings of the same levers are ``PAPER_SETTINGS``: the ``paper`` grid states them in every row (a test
holds the two together) and ``orch train --paper`` starts from them.
"""

from __future__ import annotations

from typing import Any

# The paper (Pamungkas et al. 2025): pixel-mean BCE, constant lr, no weight decay, every slice equally likely,
# geometric augmentation only, no test-time augmentation, no post-processing, segmentation_models_pytorch's U-Net
# (a ReLU in front of the head). (Its optimizer and lr are the grid's
# axes, not settings.)
PAPER_SETTINGS: dict[str, Any] = {
    "loss": "bce",
    "schedule": "constant",
    "warmup_epochs": 0.0,
    "weight_decay": 0.0,
    "sampling": "uniform",
    "intensity_aug": False,
    "tta": False,
    "min_component": 0,
    "head_relu": True,
}
