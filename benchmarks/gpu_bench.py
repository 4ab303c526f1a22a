"""The device check in one call: ``orch bench`` for every depth, then a short real ``fit`` on synthetic LGG data
made on the machine (nothing big travels). Writes bench.jsonl, fit.json, log to OUT; prints a compact table.

    python3 benchmarks/gpu_bench.py --out "$OUT"            # the GPU run (see gpu_bench.sh)
    python3 benchmarks/gpu_bench.py --out /tmp/b --small    # the same path on a CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from data_prep import PrepOptions, make_synthetic, prepare  # noqa: E402
from models import list_encoders  # noqa: E402
from orchestrator.bench import BenchConfig, run_bench, summary  # noqa: E402
from orchestrator.config import TrainConfig  # noqa: E402
from orchestrator.recipe import PAPER_SETTINGS  # noqa: E402
from orchestrator.training import fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--small", action="store_true", help="CPU smoke sizes")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--encoders", default=",".join(list_encoders()))
    ap.add_argument("--fit-encoder", default="resnet34", choices=list_encoders())
    ap.add_argument("--fit-epochs", type=int, default=8)
    ap.add_argument("--patients", type=int, default=24)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / "log.txt")])
    print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", flush=True)

    if torch.cuda.is_available():
        try:
            print("graph checks:", json.dumps(_graph_checks()), flush=True)
        except Exception:
            traceback.print_exc()
    rows = []
    if not args.skip_bench:
        bcfg = BenchConfig(encoders=tuple(args.encoders.split(",")))
        if args.small:
            bcfg = BenchConfig(encoders=("resnet18",), batch_size=4, image_size=64, steps=2, warmup=1, slices=16)
        (out / "bench.jsonl").unlink(missing_ok=True)
        rows = run_bench(bcfg, out / "bench.jsonl", on_row=lambda r: print(json.dumps(r), flush=True))

    print("\n=== bench (img/s, batch %s) ===" % (rows[0]["batch_size"] if rows else "-"))
    print(f"{'encoder':10} {'naive':>8} {'strict':>8} {'loop':>8} {'graph':>8} {'x naive':>8} {'ceiling':>8} "
          f"{'/ceil':>6} "
          f"{'peakGiB':>8} {'eval':>8} {'h_ours':>7} {'h_naive':>7}")
    for r in rows:
        best = max(r.get("loop_graph_img_per_s") or 0, r.get('loop_img_per_s') or 0)
        ceil = r.get("design_ceiling_img_per_s")
        print(f"{r['encoder']:10} {r.get('naive_img_per_s') or 0:8.0f} {r.get('naive_strict_img_per_s') or 0:8.0f} "
              f"{r.get('loop_img_per_s') or 0:8.0f} "
              f"{r.get('loop_graph_img_per_s') or 0:8.0f} {best / (r.get('naive_img_per_s') or float('nan')):8.2f} "
              f"{ceil or 0:8.0f} "
              f"{(best / ceil) if ceil else 0:6.2f} {r.get('loop_graph_peak_gib') or r.get('loop_peak_gib') or 0:8.2f} "
              f"{r.get('eval_img_per_s') or 0:8.0f} {r.get('paper_hours_ours', 0):7.2f} "
              f"{r.get('paper_hours_naive', 0):7.2f}")
    if rows:
        print("paper grid projection (hours, sequential on this device):", summary(rows))
    try:
        _fit(args, out)
    except Exception:  # keep the bench figures even if the fit breaks
        traceback.print_exc()
        sys.exit(1)


def _graph_checks() -> dict:
    """Captured step == eager step (same init, same batches, no augmentation), and fresh augmentation per replay."""
    from models import create_model
    from orchestrator.bench import synthetic_split
    from orchestrator.training.data import BatchMaker
    from orchestrator.training.step import TrainStep, capture, make_loss, make_optimizer, resolve_amp

    dev = torch.device("cuda")
    split = synthetic_split(64, 256, dev)
    make = BatchMaker(split)
    cfg = TrainConfig(encoder="resnet18", lr=1e-4, optimizer="adam", **PAPER_SETTINGS)
    losses, params = {}, {}
    for mode in ("eager", "graph"):
        torch.manual_seed(0)
        model = create_model("resnet18").to(dev).to(memory_format=torch.channels_last)
        step = TrainStep(model, make_optimizer(model.parameters(), cfg, dev), make_loss("bce"),
                         lambda i, augment: make(i, False), dev, resolve_amp("auto", dev), None, mode=mode)
        trace = []
        for k in range(12):
            step.reset()
            step(torch.arange(16 * (k % 4), 16 * (k % 4) + 16, device=dev))
            trace.append(step.loss_sum.clone())
        losses[mode] = torch.stack(trace).float().cpu()
        params[mode] = torch.cat([p.detach().float().flatten() for p in model.parameters()])
        assert step.mode == mode, (mode, step.mode, step.timings)
    rel_loss = float(((losses["eager"] - losses["graph"]).norm() / losses["eager"].norm()))
    rel_param = float(((params["eager"] - params["graph"]).norm() / params["eager"].norm()))
    idx = torch.arange(16, device=dev)
    g, (x, _) = capture(lambda: make(idx, True))
    g.replay()
    a = x.clone()
    g.replay()
    aug_differs = bool((a != x).any())
    per_opt = {}
    for opt_name in ("sgd", "rmsprop"):  # adam is covered above: each optimizer must capture
        torch.manual_seed(0)
        model = create_model("resnet18").to(dev).to(memory_format=torch.channels_last)
        step = TrainStep(model, make_optimizer(model.parameters(), cfg.replace(optimizer=opt_name), dev),
                         make_loss("bce_dice"), make, dev, resolve_amp("auto", dev), None, mode="graph")
        for k in range(8):
            step(torch.arange(16 * (k % 4), 16 * (k % 4) + 16, device=dev))
        per_opt[opt_name] = {"mode": step.mode, "loss_sum": float(step.loss_sum),
                             "error": step.timings.get("capture_error")}
    return {"per_optimizer": per_opt, "rel_loss_diff": rel_loss, "rel_param_diff": rel_param,
            "aug_differs_per_replay": aug_differs,
            "loss_eager_first_last": [float(losses["eager"][0]), float(losses["eager"][-1])],
            "ok": rel_loss < 0.05 and rel_param < 0.05 and aug_differs}


def _fit(args, out: Path) -> None:
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    make_synthetic(work / "src", patients=4 if args.small else args.patients, seed=0)
    prepare(work / "src", work / "prep", PrepOptions(workers=1 if args.small else 8, val_frac=0.2, test_frac=0.2))
    prep_s = time.perf_counter() - t0
    base = TrainConfig(encoder=args.fit_encoder, epochs=args.fit_epochs, lr=1e-3, optimizer="adam", **PAPER_SETTINGS)
    if args.small:
        base = base.replace(encoder="resnet18", epochs=2, image_size=64, max_steps=2, batch_size=4)
    runs = {"auto": base, "graph_off": base.replace(cuda_graph="off", epochs=min(base.epochs, 3)),
            "fp16": base.replace(amp="fp16", epochs=2), "sgd_graph_on": base.replace(optimizer="sgd", lr=1e-2,
                                                                                      cuda_graph="on", epochs=2)}
    fits = []
    for label, tcfg in runs.items():
        try:
            fits.append(_one_fit(label, tcfg, work, prep_s))
        except Exception:
            traceback.print_exc()
    (out / "fit.json").write_text(json.dumps(fits, indent=2))


def _one_fit(label: str, tcfg: TrainConfig, work: Path, prep_s: float) -> dict:
    epochs = []
    t1 = time.perf_counter()
    res = fit(tcfg, work / "prep", work / label, on_epoch=lambda r: epochs.append({"epoch": r.epoch, **r.metrics}))
    fit_s = time.perf_counter() - t1
    print(f"\n=== fit {label}: {tcfg.encoder} {tcfg.optimizer} amp={tcfg.amp} cuda_graph={tcfg.cuda_graph} "
          f"status {res.status}, prep {prep_s:.0f}s fit {fit_s:.0f}s ===")
    for e in epochs:
        print(f"epoch {e['epoch']}: loss {e['loss']:.4f} val_loss {e.get('val_loss', float('nan')):.4f} "
              f"dice_volume_mean {e.get('dice_volume_mean', float('nan')):.3f} img/s {e['img_per_s']:.0f} "
              f"epoch {e['epoch_time_s']:.1f}s")
    print("test", {k: round(v, 4) for k, v in res.test.items()})
    print("extra", res.extra)
    return {"label": label, "config": tcfg.to_dict(), "fit_s": fit_s, "status": res.status, "epochs": epochs,
            "test": res.test, "extra": res.extra, "artefacts": sorted(p.name for p in (work / label).iterdir())}


if __name__ == "__main__":
    main()
