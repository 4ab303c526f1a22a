"""GPU: orch's recipe in 5-fold cross-validation over all 110 LGG patients, and the paper grid's best row on fold 1.

One run on the lent GPU machine (no Ray, no MLflow there: the loop and the CV module need neither). It expands
the LGG JPEG q90 copy carried in the checkout, prepares it, trains the recipe on every fold (every patient tested
once, Buda et al.'s protocol) and the paper's best configuration (ResNet50, Adam, 1e-4, BCE, constant lr) on the
same first fold, and writes everything under --out: ``summary.json`` (the figures for BENCHMARKS.md),
``cv_per_patient.csv``, ``cv_dice.png``, ``log.txt``. A ``--max-minutes`` guard skips what would not finish in
time (a skipped fold makes the CV incomplete, and the summary says so).

On the device machine (the tar and expand.py copied into .lgg/, which .git/info/exclude ignores, and carried):

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_recipe_cv.py --lgg .lgg --out $OUT --max-minutes 9

Tested on a CPU with a tiny plan (what CI could run; figures from it mean nothing):

    python benchmarks/gpu_recipe_cv.py --kaggle ../shared/lgg-sample/kaggle_3m --out /tmp/gpucv --device cpu \\
        --image-size 32 --epochs 1 --paper-epochs 1 --max-steps 2 --folds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep import PrepOptions, prepare  # noqa: E402
from models import list_encoders  # noqa: E402
from orchestrator.config import TrainConfig  # noqa: E402
from orchestrator.recipe import PAPER_SETTINGS  # noqa: E402
from orchestrator.training import fit  # noqa: E402
from orchestrator.training.cv import fold_rows, write_cv  # noqa: E402
from orchestrator.training.data import open_data  # noqa: E402

log = logging.getLogger("gpu_recipe_cv")


def _source(args, work: Path) -> Path:
    if args.kaggle:
        return Path(args.kaggle)
    src = work / "kaggle_3m"
    if not (src / "data.csv").exists():
        lgg = Path(args.lgg)
        subprocess.run([sys.executable, str(lgg / "expand.py"), str(work), str(lgg / "lgg-q90.tar")], check=True)
    return src


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lgg", default=".lgg", help="Folder holding lgg-q90.tar and expand.py.")
    ap.add_argument("--kaggle", default=None, help="Use this kaggle_3m tree instead of expanding --lgg.")
    ap.add_argument("--work", default="/tmp/lgg-work")
    ap.add_argument("--out", required=True)
    ap.add_argument("--encoder", default="resnet34", choices=list_encoders())
    ap.add_argument("--epochs", type=int, default=30, help="Recipe epochs per fold.")
    ap.add_argument("--paper-epochs", type=int, default=50)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-minutes", type=float, default=9.0)
    return ap.parse_args()


def main() -> None:
    args = _args()
    t0 = time.monotonic()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / "log.txt")])
    left = lambda: args.max_minutes * 60 - (time.monotonic() - t0)  # noqa: E731

    prepared = work / "prepared"
    prepare(_source(args, work), prepared, PrepOptions(workers=8))
    data = open_data(prepared)
    scale = {"image_size": args.image_size, "max_steps": args.max_steps, "device": args.device}
    recipe = TrainConfig(encoder=args.encoder, epochs=args.epochs, folds=args.folds, **scale)
    paper = TrainConfig(encoder="resnet50", optimizer="adam", lr=1e-4, epochs=args.paper_epochs, folds=args.folds,
                        fold=1, **PAPER_SETTINGS, **scale)
    summary: dict = {"data": "LGG, JPEG q90 copy", "prep_s": round(time.monotonic() - t0, 1),
                     "recipe": recipe.to_dict(), "paper_row": paper.to_dict(), "folds": {}, "skipped": []}
    fold_s = _recipe_folds(recipe, data, work, out, summary, left)
    _paper_row(paper, data, work, summary, left, fold_s, args)
    summary["total_s"] = round(time.monotonic() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps({k: summary[k] for k in ("recipe_cv", "skipped", "total_s")}, indent=2, default=str))


def _skip(summary: dict, what: str) -> None:
    summary["skipped"].append(what)
    log.warning(what)


def _recipe_folds(recipe: TrainConfig, data, work: Path, out: Path, summary: dict, left) -> list[float]:
    """The recipe on every fold that fits the time left (into ``summary``); the seconds each fold took."""
    rows, results, fold_s = [], {}, []
    for k in range(1, recipe.folds + 1):
        need = max(fold_s) * 1.1 if fold_s else 0.0
        if need > left():
            _skip(summary, f"recipe fold {k}: ~{need:.0f} s needed, {left():.0f} s left")
            continue
        t = time.monotonic()
        r = fit(recipe.replace(fold=k), data, work / "runs" / f"recipe-fold{k}")
        fold_s.append(time.monotonic() - t)
        results[k] = r
        rows += fold_rows(k, r)
        summary["folds"][k] = {"status": r.status, "s": round(fold_s[-1], 1), "test": r.test,
                               "img_per_s": sum(h["img_per_s"] for h in r.history) / max(1, len(r.history))}
        log.info("recipe fold %d: %s in %.0f s, test dice_volume_mean %.4f", k, r.status, fold_s[-1],
                 r.test.get("dice_volume_mean", float("nan")))
    summary["recipe_cv"] = write_cv(out, rows, results, expected_patients=data.patients())
    return fold_s


def _paper_row(paper: TrainConfig, data, work: Path, summary: dict, left, fold_s: list[float], args) -> None:
    """The paper's best row on fold 1, if it fits: its epoch time is ~1.3x a ResNet34 recipe epoch (ResNet50 vs
    34 step)."""
    need = (fold_s[0] * args.paper_epochs / max(1, args.epochs) * 1.4) if fold_s else 0.0
    if need > left():
        _skip(summary, f"paper row on fold 1: ~{need:.0f} s needed, {left():.0f} s left")
        return
    t = time.monotonic()
    r = fit(paper, data, work / "runs" / "paper-resnet50-adam-1e-4-fold1")
    summary["paper_row_fold1"] = {"status": r.status, "s": round(time.monotonic() - t, 1), "test": r.test,
                                  "recipe_fold1_test": summary["folds"].get(1, {}).get("test")}


if __name__ == "__main__":
    main()
