"""GPU (issue 13): what a paper-grid trial costs beyond its training step, and how many trials to pack on one GPU.

One run on the lent GPU machine (no Ray, no MLflow there: trials are ``fit`` in processes started directly, as
Ray's fractional GPUs would start them). It expands the LGG JPEG q90 copy carried in the checkout, prepares it, and
measures, per depth (``--encoders``):

- ``bare``: the bare captured step (``orch bench``'s ``loop_graph``) on synthetic device data, images/s;
- ``trial``: one real trial, ``fit`` for ``--epochs`` epochs of the paper configuration on the full LGG, copying the
  run directory to a local "storage" folder after each epoch as the Tune trial's checkpoint report does: per
  steady epoch (epoch >= 2) the train img/s, validation s, checkpoint (last.pt) s, storage copy s, and the loop's
  ratio to the bare step with everything included;
- ``packing``: 1, 2 and 4 concurrent trial processes (``--concurrency``), ``--pack-steps`` steps per epoch, giving
  aggregate img/s over their steady epochs; the packing with the best aggregate wins (a smaller one within 3 %).

Then ``grid``: the paper grid (45 configurations, ``--grid-epochs`` epochs each) with the winning packing, deepest
first, trials as processes in GPU slots; its measured wall time and its projection to 50 epochs (each trial's
measured wall + 48 more steady epochs, list-scheduled in the same slots). A ``--max-minutes`` guard skips what
would not fit (the summary lists it). Writes ``summary.json``, ``packing.md``, ``gpu_share_measured.csv``,
``log.txt`` under --out.

    mkdir -p .lgg && cp ../shared/lgg-full/lgg-q90.tar ../shared/lgg-full/expand.py .lgg/
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_packing.py --lgg .lgg --out $OUT --max-minutes 9

CPU smoke test (tiny sizes; its figures mean nothing):

    python benchmarks/gpu_packing.py --kaggle ../shared/lgg-sample/kaggle_3m --out /tmp/pack --cpu-smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("gpu_packing")
SMOKE = {"image_size": 32, "max_steps": 2, "max_eval_slices": 16, "batch_size": 4, "device": "cpu"}


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lgg", default=".lgg", help="Folder holding lgg-q90.tar and expand.py.")
    ap.add_argument("--kaggle", default=None, help="Use this kaggle_3m tree instead of expanding --lgg.")
    ap.add_argument("--work", default="/tmp/lgg-pack")
    ap.add_argument("--out", required=True)
    ap.add_argument("--encoders", default="resnet152,resnet101,resnet50,resnet34,resnet18")
    ap.add_argument("--epochs", type=int, default=3, help="Epochs of the one-trial measurement.")
    ap.add_argument("--concurrency", default="1,2,4")
    ap.add_argument("--pack-steps", type=int, default=60, help="Steps per epoch of the packing runs.")
    ap.add_argument("--pack-epochs", type=int, default=3)
    ap.add_argument("--grid-epochs", type=int, default=2)
    ap.add_argument("--grid-trials", type=int, default=3, help="Trials per depth of the grid run (9: all 45); the "
                    "projection counts each run trial 9 / this many times.")
    ap.add_argument("--share-table", default=None, help="GPU shares for the grid when the packing is not measured "
                    "in this run (e.g. an earlier run's gpu_share_measured.csv). Default: orchestrator's table.")
    ap.add_argument("--phases", default="trial,packing,grid")
    ap.add_argument("--max-minutes", type=float, default=9.0)
    ap.add_argument("--cpu-smoke", action="store_true", help="Tiny sizes on the CPU: checks the script, not a GPU.")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one trial process (internal)
    return ap.parse_args(argv)


def run_worker(spec: dict) -> None:
    """One trial process: ``fit`` of ``spec['config']``; the storage copy every ``checkpoint_every`` epochs, as the
    Tune trial reports it; per-epoch wall-clock stamps to ``spec['result']``."""
    import torch

    from orchestrator.config import TrainConfig
    from orchestrator.training import fit

    torch.set_num_threads(spec.get("threads", 1))
    cfg = TrainConfig.from_dict(spec["config"])
    run_dir, storage = Path(spec["run_dir"]), Path(spec["storage"])
    shutil.rmtree(run_dir, ignore_errors=True)
    t0, epochs = time.time(), []

    def on_epoch(rep) -> None:
        t_copy = time.time()
        if rep.epoch % spec.get("checkpoint_every", 1) == 0:
            shutil.copytree(rep.run_dir, storage / f"epoch{rep.epoch}", dirs_exist_ok=True)
        epochs.append({"epoch": rep.epoch, "end": time.time(), "copy_s": time.time() - t_copy,
                       **{k: rep.metrics[k] for k in ("img_per_s", "epoch_time_s", "loss")}})

    r = fit(cfg, spec["data"], run_dir, on_epoch=on_epoch, force=True)
    ckpt = run_dir / "last.pt"
    out = {"start": t0, "end": time.time(), "epochs": epochs, "status": r.status, "steps_per_epoch":
           r.extra.get("train_slices", 0) // cfg.batch_size if not cfg.max_steps else cfg.max_steps,
           "batch_size": cfg.batch_size, "mode": r.extra.get("cuda_graph"), "timings": r.extra.get("step_timings_ms"),
           "last_pt_mb": ckpt.stat().st_size / 2**20 if ckpt.exists() else None}
    Path(spec["result"]).write_text(json.dumps(out, default=str))


def _launch(spec: dict, work: Path, name: str) -> tuple[subprocess.Popen, Path]:
    spec = spec | {"run_dir": str(work / "runs" / name), "storage": str(work / "storage" / name),
                   "result": str(work / "results" / f"{name}.json")}
    Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
    Path(spec["result"]).unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(work), "--worker", json.dumps(spec)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / "results" / f"{name}.err", "w")), \
        Path(spec["result"])


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"error": (path.with_suffix(".err").read_text()[-800:])}


def _steady(res: dict) -> list[dict]:
    """The epochs after the first (which holds the graph capture and cuDNN's autotuning)."""
    return [e for e in res.get("epochs", []) if e["epoch"] >= 2] or res.get("epochs", [])


def _config(enc: str, args, epochs: int, scale: dict, **kw) -> dict:
    from orchestrator.config import TrainConfig
    from orchestrator.recipe import PAPER_SETTINGS

    return TrainConfig(encoder=enc, optimizer="adam", lr=1e-4, epochs=epochs, **PAPER_SETTINGS,
                       **{**scale, **kw}).to_dict()


def measure_depth(enc: str, args, data: str, work: Path, scale: dict, left) -> dict:
    """``bare`` step, one real ``trial`` and the ``packing`` runs of one depth (each skipped when out of time)."""
    import torch

    from orchestrator.bench import BenchConfig, _loop, synthetic_split

    row: dict = {"encoder": enc}
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    bsz = _config(enc, args, 1, scale)["batch_size"]  # the trial's own batch
    bcfg = BenchConfig(encoders=(enc,), batch_size=bsz, image_size=scale.get("image_size") or 256,
                       steps=2 if args.cpu_smoke else 40, warmup=1 if args.cpu_smoke else 8,
                       slices=16 if args.cpu_smoke else 256)
    split = synthetic_split(bcfg.slices, bcfg.image_size, device)
    row["bare_img_per_s"] = _loop(enc, bcfg, device, split, graph=device.type == "cuda")["img_per_s"]
    del split
    if "trial" in args.phases and left() > 60:
        proc, path = _launch({"config": _config(enc, args, args.epochs, scale), "data": data}, work, f"trial-{enc}")
        proc.wait()
        row["trial"] = _trial_row(_read(path), row["bare_img_per_s"])
    if "packing" in args.phases:
        row["packing"] = {}
        for n in (int(c) for c in args.concurrency.split(",")):
            if left() < 60:
                row.setdefault("skipped", []).append(f"packing x{n}")
                continue
            pack = _config(enc, args, args.pack_epochs, scale, max_steps=scale.get("max_steps") or args.pack_steps)
            runs = [_launch({"config": pack, "data": data}, work, f"pack-{enc}-x{n}-{i}") for i in range(n)]
            for p, _ in runs:
                p.wait()
            row["packing"][n] = _pack_row([_read(path) for _, path in runs])
    return row


def _trial_row(res: dict, bare: float) -> dict:
    if "error" in res:
        return res
    steady = _steady(res)
    images = res["steps_per_epoch"] * res["batch_size"]
    wall = [b["end"] - a["end"] for a, b in zip(res["epochs"], res["epochs"][1:])] or \
        [steady[0]["epoch_time_s"] + steady[0]["copy_s"]]
    train_s = sum(images / e["img_per_s"] for e in steady) / len(steady)
    epoch_s = sum(e["epoch_time_s"] for e in steady) / len(steady)
    copy_s = sum(e["copy_s"] for e in steady) / len(steady)
    wall_s = sum(wall) / len(wall)
    return {"train_img_per_s": images / train_s, "val_s": epoch_s - train_s, "copy_s": copy_s,
            "ckpt_and_rest_s": max(wall_s - epoch_s - copy_s, 0.0), "epoch_wall_s": wall_s,
            "loop_vs_bare": images / wall_s / bare, "last_pt_mb": res["last_pt_mb"], "mode": res["mode"],
            "process_s": res["end"] - res["start"]}


def _pack_row(results: list[dict]) -> dict:
    """Aggregate img/s of concurrent trials: images of their steady epochs over the span those epochs cover."""
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    images, starts, ends = 0, [], []
    for r in results:
        eps = r["epochs"]
        steady = _steady(r)
        first = eps[eps.index(steady[0]) - 1]["end"] if eps.index(steady[0]) else r["start"]
        starts.append(first)
        ends.append(steady[-1]["end"])
        images += len(steady) * r["steps_per_epoch"] * r["batch_size"]
    return {"aggregate_img_per_s": images / (max(ends) - min(starts)), "processes": len(results),
            "per_trial_img_per_s": [sum(e["img_per_s"] for e in _steady(r)) / len(_steady(r)) for r in results]}


def choose_packing(row: dict) -> tuple[int, str]:
    """The concurrency with the best aggregate img/s (a smaller one within 3 % wins: less memory, fewer starts)."""
    packs = {int(n): p["aggregate_img_per_s"] for n, p in row.get("packing", {}).items() if "error" not in p}
    if not packs:
        return 0, "not measured"
    best = max(packs.values())
    n = min(k for k, v in packs.items() if v >= 0.97 * best)
    detail = ", ".join(f"x{k} {v:.0f} img/s" for k, v in sorted(packs.items()))
    return n, f"measured: benchmarks/gpu_packing.py, aggregate {detail}"


def run_grid(shares: dict[str, float], args, data: str, work: Path, scale: dict, left) -> dict:
    """The paper grid at ``--grid-epochs`` with ``shares``, deepest first, trials as processes in GPU slots."""
    from orchestrator.grids import load_grid

    entries = [e for e in load_grid("paper", {"epochs": args.grid_epochs, **scale}) if e.config.encoder in shares]
    seen: dict[str, int] = {}
    entries = [e for e in entries if seen.setdefault(e.config.encoder, 0) < args.grid_trials
               and not seen.update({e.config.encoder: seen[e.config.encoder] + 1})]
    order = [enc for enc in args.encoders.split(",") if enc in shares]
    queue = sorted(entries, key=lambda e: order.index(e.config.encoder))
    t0, running, done, skipped = time.time(), [], [], []
    while queue or running:
        for item in [r for r in running if r[0].poll() is not None]:
            running.remove(item)
            done.append({"trial_id": item[2].trial_id, "share": item[3], **_read(item[1])})
        used = sum(r[3] for r in running)
        while queue and used + shares[queue[0].config.encoder] <= 1.0 + 1e-9:
            e = queue.pop(0)
            if left() < 30:
                skipped.append(e.trial_id)
                continue
            proc, path = _launch({"config": e.config.to_dict(), "data": data}, work, f"grid-{e.trial_id}")
            running.append((proc, path, e, shares[e.config.encoder]))
            used += shares[e.config.encoder]
        time.sleep(0.2)
    wall = time.time() - t0
    return {"trials": len(done), "skipped": skipped, "wall_s": wall, "epochs": args.grid_epochs,
            "per_depth": args.grid_trials, "shares": shares, "results": done,
            "projected_50_epochs_h": project(done, 50 - args.grid_epochs, 9 / args.grid_trials) / 3600}


def project(done: list[dict], more_epochs: int, copies: float = 1.0) -> float:
    """Seconds for the same trials with ``more_epochs`` more steady epochs each, list-scheduled into GPU slots in
    the order they ran (each trial's measured wall + the extra epochs at its measured steady epoch time), each
    trial standing for ``copies`` trials of its depth (rounded per depth)."""
    ok = sorted((r for r in done if "error" not in r), key=lambda r: r.get("start", 0.0))
    want = round(len(ok) * copies)
    ok = [ok[i % len(ok)] for i in range(want)] if ok else []
    ok = sorted(ok, key=lambda r: r.get("start", 0.0))
    ends: list[tuple[float, float]] = []  # (end time, share) of the trials on the GPU
    now, t = 0.0, 0.0
    for r in ok:
        steady = _steady(r)
        gaps = [b["end"] - a["end"] for a, b in zip(r["epochs"], r["epochs"][1:])]
        epoch = sum(gaps) / len(gaps) if gaps else steady[-1]["epoch_time_s"]
        length = (r["end"] - r["start"]) + more_epochs * epoch
        while sum(s for _, s in ends) + r["share"] > 1.0 + 1e-9:
            now = min(e for e, _ in ends)
            ends = [(e, s) for e, s in ends if e > now]
        ends.append((now + length, r["share"]))
        t = max(t, now + length)
    return t


def _prepare(args, work: Path) -> str:
    """The prepared LGG (expanded from the carried JPEG copy unless --kaggle names a tree)."""
    from data_prep import PrepOptions, prepare

    src = Path(args.kaggle) if args.kaggle else work / "kaggle_3m"
    if not args.kaggle and not (src / "data.csv").exists():
        lgg = Path(args.lgg)
        subprocess.run([sys.executable, str(lgg / "expand.py"), str(work), str(lgg / "lgg-q90.tar")], check=True)
    prepared = work / "prepared"
    if not (prepared / "manifest.json").exists():
        prepare(src, prepared, PrepOptions(workers=2 if args.cpu_smoke else 8))
    return str(prepared)


def write_tables(out: Path, summary: dict) -> None:
    """``gpu_share_measured.csv`` (the candidate orchestrator/grids/gpu_share.csv) and ``packing.md``."""
    import csv

    with open(out / "gpu_share_measured.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["encoder", "gpu_share", "source"])
        for d in summary["depths"]:
            if d.get("chosen"):
                w.writerow([d["encoder"], f"{1 / d['chosen']:g}", f"{d['chosen_source']} on {summary['device']}"])
    lines = ["| encoder | bare img/s | trial train img/s | val s | ckpt+rest s | copy s | epoch s | loop/bare | "
             "x1 | x2 | x4 | chosen |", "|" + "---|" * 12]
    for d in summary["depths"]:
        t, p = d.get("trial", {}), d.get("packing", {})
        cells = [_f(d.get("bare_img_per_s")), _f(t.get("train_img_per_s")), _f(t.get("val_s")),
                 _f(t.get("ckpt_and_rest_s")), _f(t.get("copy_s")), _f(t.get("epoch_wall_s")),
                 _f(t.get("loop_vs_bare")), *[_f(p.get(n, {}).get("aggregate_img_per_s")) for n in (1, 2, 4)],
                 f"x{d['chosen']}" if d.get("chosen") else "-"]
        lines.append(f"| {d['encoder']} | " + " | ".join(cells) + " |")
    g = summary.get("grid")
    if g:
        lines += ["", f"Grid: {g['trials']} trials x {g['epochs']} epochs in {g['wall_s'] / 60:.1f} min measured; "
                  f"projected to 50 epochs: {g['projected_50_epochs_h']:.2f} h; skipped: {len(g['skipped'])}."]
    (out / "packing.md").write_text("\n".join(lines) + "\n")


def _f(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}")


def main(argv=None) -> None:
    args = _args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return
    import torch

    from orchestrator.sweep.plan import DEFAULT_GPU_SHARE, load_gpu_share

    t0 = time.monotonic()
    left = lambda: args.max_minutes * 60 - (time.monotonic() - t0)  # noqa: E731
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / "log.txt")])
    scale = dict(SMOKE) if args.cpu_smoke else {}
    if args.cpu_smoke:
        torch.set_num_threads(1)  # as each trial process runs: the bare step is measured the same way
    data = _prepare(args, work)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu_smoke else "cpu"
    summary: dict = {"device": device, "torch": torch.__version__, "args": vars(args), "depths": []}
    for enc in args.encoders.split(",") if {"trial", "packing"} & set(args.phases.split(",")) else []:
        if left() < 90:
            summary.setdefault("skipped", []).append(f"depth {enc}")
            continue
        row = measure_depth(enc, args, data, work, scale, left)
        row["chosen"], row["chosen_source"] = choose_packing(row)
        summary["depths"].append(row)
        log.info("%s: %s", enc, json.dumps(row, default=str)[:600])
    table = load_gpu_share(Path(args.share_table)) if args.share_table else DEFAULT_GPU_SHARE
    measured = {d["encoder"]: 1 / d["chosen"] for d in summary["depths"] if d["chosen"]}
    shares = {enc: measured.get(enc, table[enc]) for enc in args.encoders.split(",")}
    if "grid" in args.phases and shares:
        summary["grid"] = run_grid(shares, args, data, work, scale, left)
    summary["total_s"] = time.monotonic() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    write_tables(out, summary)
    print((out / "packing.md").read_text())


if __name__ == "__main__":
    main()
