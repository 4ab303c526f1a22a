"""Which recipe levers help? One-at-a-time ablations on real LGG data, plus evaluation-only levers.

Every variant trains the same encoder for the same number of optimizer steps from the same seed on a prepared
directory (the full LGG: ``../shared/lgg-full``, expanded and prepared, JPEG q90 copy), changing one lever of
the base recipe; then it scores the best-validation checkpoint on the validation and test patients. The
evaluation-only levers (flip TTA, 3D post-processing) are scored on the base variant's checkpoint. Results are
step-determined (not time-limited), so a busy machine changes only the wall time. Rerunning resumes.

    python benchmarks/recipe_ablation.py --data /work/data/prepared --out .bench/ablation --image-size 64 \\
        --epochs 6 --json .bench/ablation.jsonl
    python benchmarks/recipe_ablation.py --data /work/data/prepared --out - --json .bench/levers.jsonl \\
        --evaluate .bench/cpu128/recipe/best.pt          # TTA and post-processing on one trained model
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from orchestrator.config import TrainConfig
from orchestrator.recipe import PAPER_SETTINGS
from orchestrator.training import fit, load_checkpoint
from orchestrator.training.data import load_split, open_data
from orchestrator.training.inference import evaluate_split
from orchestrator.training.step import make_loss

BASE = dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, loss="bce_dice", schedule="cosine", warmup_epochs=0.5,
            sampling="tumour", tumour_fraction=0.5, intensity_aug=False, tta=False, min_component=0, head_relu=False)
VARIANTS = {
    "base": {},
    "head_relu": {"head_relu": True},
    "loss=bce": {"loss": "bce"},
    "loss=dice": {"loss": "dice"},
    "sampling=uniform": {"sampling": "uniform"},
    "schedule=constant": {"schedule": "constant", "warmup_epochs": 0.0},
    "optimizer=adam_wd=0": {"optimizer": "adam", "weight_decay": 0.0},
    "intensity_aug": {"intensity_aug": True},
    "paper settings (adam)": {**PAPER_SETTINGS, "optimizer": "adam"},
    "paper settings (adam), head_relu=False": {**PAPER_SETTINGS, "optimizer": "adam", "head_relu": False},
}
EVAL_VARIANTS = [(tta, mc) for tta in (False, True) for mc in (0, 20, 100, 400)]


def _score(model, data, cfg: TrainConfig, tta: bool, min_component: int) -> dict[str, float]:
    out = {}
    for split in ("val", "test"):
        s = load_split(data, split, torch.device("cpu"), cfg.image_size)
        m, _ = evaluate_split(model, s, make_loss(cfg.loss), None, 64, tta=tta, min_component=min_component)
        out[f"{split}_dice_volume_mean"] = m["dice_volume_mean"]
        out[f"{split}_dice_global"] = m["dice_global"]
    out["mean_val_test"] = (out["val_dice_volume_mean"] + out["test_dice_volume_mean"]) / 2
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="Run directories go here (rerun resumes).")
    ap.add_argument("--json", required=True, help="Append one JSON line per result.")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated names of VARIANTS.")
    ap.add_argument("--evaluate", default=None, metavar="CHECKPOINT",
                    help="Only score the evaluation-only levers (TTA, post-processing) on this best.pt.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    data = open_data(args.data)
    if args.evaluate:
        model, cfg, _ = load_checkpoint(args.evaluate)
        for tta, mc in EVAL_VARIANTS:
            row = {"variant": f"{args.evaluate}: tta={tta}, min_component={mc}", "image_size": cfg.image_size,
                   **_score(model, data, cfg, tta, mc), "data": str(args.data)}
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        return
    done = set()
    if Path(args.json).exists():
        done = {json.loads(line)["variant"] for line in Path(args.json).read_text().splitlines() if line.strip()}
    for name in args.variants.split(","):
        cfg = TrainConfig(**{**BASE, **VARIANTS[name]}, encoder=args.encoder, epochs=args.epochs,
                          batch_size=args.batch_size, image_size=args.image_size, device="cpu")
        run_dir = Path(args.out) / name.replace(" ", "_").replace("=", "-").replace(",", "_")
        t0 = time.time()
        result = fit(cfg, data, run_dir)
        model, _, _ = load_checkpoint(run_dir / "best.pt")
        evals = EVAL_VARIANTS if name == "base" else [(False, 0)]
        for tta, mc in evals:
            variant = name if (tta, mc) == (False, 0) else f"{name} + tta={tta}, min_component={mc}"
            if variant in done:
                continue
            row = {"variant": variant, "encoder": args.encoder, "image_size": args.image_size,
                   "epochs": args.epochs, "status": result.status, "best_epoch": result.best_epoch,
                   "train_s": round(time.time() - t0, 1), **_score(model, data, cfg, tta, mc),
                   "data": str(args.data)}
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
