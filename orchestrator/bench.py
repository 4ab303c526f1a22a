"""``orch bench``: images/s of one training step per encoder depth, three ways, in one run.

- ``naive``: fp32, eager, NCHW, a float batch already on the device, default Adam, torch's default flags (what a
  plain script does; cuDNN may use TF32 for convolutions); ``naive_strict``: the same with TF32 off;
- ``loop``: our step -- uint8 data on the device, gather + GPU augmentation + normalisation, bf16 autocast,
  channels-last, fused Adam -- eager;
- ``loop_graph``: the same step captured as one CUDA graph (what ``fit`` runs when ``cuda_graph`` is on/auto).

Each variant: warm-up steps, then ``steps`` timed steps (host clock around a device sync), peak device memory.
Also: eval forward images/s, and a projection of the paper grid's wall time (45 configurations x 50 epochs;
9 configurations per depth) on this machine. On a CPU it runs small sizes and says so.

``run_grid_bench`` (``orch bench --grid paper``): per depth, a short trial epoch -- ``fit``'s step, its validation
pass (``evaluate_split``) and its ``last.pt`` -- in as many concurrent processes as the sweep packs on one GPU
(``1 / gpu_share``), and from those the grid's projected wall time on this machine (``grid_projection``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models import create_model, list_encoders
from orchestrator.config import ConfigError, TrainConfig
from orchestrator.recipe import PAPER_SETTINGS
from orchestrator.training.data import DeviceSplit, split_slices
from orchestrator.training.step import autocast, make_train_step, step_parts

log = logging.getLogger(__name__)

# Bare captured bf16 channels-last step, one H200, batch 16, 256x256 (docs/design.md), images/s; keys are
# registry encoders (models.list_encoders(); a test holds them together).
H200_CEILING = {"resnet18": 2018, "resnet34": 1673, "resnet50": 1269, "resnet101": 937, "resnet152": 737}
PAPER_EPOCHS, CONFIGS_PER_DEPTH = 50, 9  # 3 optimizers x 3 learning rates
FULL_TRAIN_SLICES, FULL_EVAL_SLICES = 3143, 786  # ~80 % / 20 % of LGG's 3,929 slices (default 0.1/0.1 split)
FULL_VAL_SLICES = FULL_EVAL_SLICES // 2  # validated every epoch; the other half (test) once, at the end


@dataclass(frozen=True)
class BenchConfig:
    encoders: tuple[str, ...] = tuple(list_encoders())
    batch_size: int = 16
    image_size: int = 256
    steps: int = 30
    warmup: int = 8
    slices: int = 256  # synthetic uint8 slices kept on the device for the loop variants
    device: str = "auto"
    train_slices: int = FULL_TRAIN_SLICES
    eval_slices: int = FULL_EVAL_SLICES  # validation + test slices (the per-depth projection's eval per epoch)
    val_slices: int = FULL_VAL_SLICES  # the grid projection's validation per epoch (test once per trial)
    variants: tuple[str, ...] = ("naive", "naive_strict", "loop", "loop_graph")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _time(fn, n: int, device: torch.device) -> float:
    """Seconds for ``n`` calls of ``fn`` (device work included)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def synthetic_split(n: int, size: int, device: torch.device, seed: int = 0) -> DeviceSplit:
    """``n`` uint8 slices with a random blob mask each, made directly on ``device`` (no files)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.rand(n, 2, generator=g) * size
    r = (0.05 + 0.1 * torch.rand(n, generator=g)) * size
    masks = (((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2) < r[:, None, None] ** 2)
    return DeviceSplit("bench", images.to(device), masks.to(torch.uint8).to(device),
                       np.array([f"P{i // 32}" for i in range(n)]), np.arange(n))


def _naive(encoder: str, cfg: BenchConfig, device: torch.device) -> tuple[float, float | None]:
    model = create_model(encoder).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
    y = (torch.rand(cfg.batch_size, 1, cfg.image_size, cfg.image_size, device=device) > 0.99).float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        opt.step()

    _time(step, cfg.warmup, device)
    _peak_reset(device)
    secs = _time(step, cfg.steps, device)
    return cfg.batch_size * cfg.steps / secs, _peak_gib(device)


def _loop(encoder: str, cfg: BenchConfig, device: torch.device, split: DeviceSplit, graph: bool) -> dict[str, Any]:
    """``fit``'s own step (``make_train_step``) for the paper grid's configuration (its projection is what this
    measures): Adam at a constant rate, eager or captured."""
    tcfg = TrainConfig(encoder=encoder, batch_size=cfg.batch_size, lr=1e-4, optimizer="adam",
                       cuda_graph="on" if graph else "off", **PAPER_SETTINGS)
    torch.manual_seed(0)
    model = create_model(tcfg.model).to(device).to(memory_format=torch.channels_last)
    parts = step_parts(model, tcfg, device)
    step = make_train_step(tcfg, parts, model, split, device)
    perm = torch.randperm(len(split), device=device)
    batches = [perm[i : i + cfg.batch_size] for i in range(0, len(split) - cfg.batch_size + 1, cfg.batch_size)]
    k = iter(range(10**9))

    def one() -> None:
        step(batches[next(k) % len(batches)])

    _time(one, cfg.warmup, device)  # includes the graph warm-up and capture
    _peak_reset(device)
    secs = _time(one, cfg.steps, device)
    out = {"img_per_s": cfg.batch_size * cfg.steps / secs, "peak_gib": _peak_gib(device), "amp": str(parts.amp_dtype),
           "mode": step.mode, "capture_error": step.timings.get("capture_error")}
    if not graph:
        out["eval_img_per_s"] = _eval_img_per_s(model, step.batch_fn, split, device, parts.amp_dtype)
    return out


def _eval_img_per_s(model, batch_fn, split: DeviceSplit, device: torch.device, amp) -> float:
    """Eval forward throughput (batch 64, no grad), for the projection."""
    model.eval()
    idx = torch.arange(min(64, len(split)), device=device)
    x, _ = batch_fn(idx, augment=False)

    @torch.no_grad()
    def fwd() -> None:
        with autocast(device, amp):
            model(x)

    _time(fwd, 3, device)
    return len(idx) * 10 / _time(fwd, 10, device)


def _variant(variant: str, enc: str, cfg: BenchConfig, device: torch.device, split: DeviceSplit) -> dict[str, Any]:
    if variant == "naive":  # torch's defaults, as a plain script runs: no cudnn autotuning, TF32 convolutions
        torch.backends.cudnn.benchmark = False
        ips, peak = _naive(enc, cfg, device)
        return {"naive_img_per_s": ips, "naive_peak_gib": peak}
    if variant == "naive_strict":  # the same with TF32 off: true fp32 arithmetic everywhere
        torch.backends.cudnn.benchmark, tf32 = False, torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            ips, peak = _naive(enc, cfg, device)
        finally:
            torch.backends.cudnn.allow_tf32 = tf32
        return {"naive_strict_img_per_s": ips}
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as fit() sets it
    r = _loop(enc, cfg, device, split, graph=variant == "loop_graph")
    out = {f"{variant}_img_per_s": r["img_per_s"], f"{variant}_peak_gib": r["peak_gib"], "amp": r["amp"],
           f"{variant}_mode": r["mode"]}
    if r.get("eval_img_per_s"):
        out["eval_img_per_s"] = r["eval_img_per_s"]
    if r.get("capture_error"):
        out[f"{variant}_capture_error"] = r["capture_error"]
    return out


def run_bench(cfg: BenchConfig, json_path: str | Path | None = None, on_row=None) -> list[dict[str, Any]]:
    """Benchmark every encoder of ``cfg``; returns one row per encoder (also appended to ``json_path`` as JSON
    lines, and passed to ``on_row`` as each finishes)."""
    device = torch.device("cuda" if (cfg.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({torch.get_num_threads()} threads)"
        log.info("no CUDA device: benchmarking on the CPU at small sizes (cpu_note says so to the user)")
    split = synthetic_split(max(cfg.slices, cfg.batch_size), cfg.image_size, device)
    rows = []
    for enc in cfg.encoders:
        row: dict[str, Any] = {"device": name, "encoder": enc, "batch_size": cfg.batch_size,
                               "image_size": cfg.image_size, "steps": cfg.steps, "torch": torch.__version__}
        for variant in cfg.variants:
            if variant in ("loop_graph", "naive_strict") and device.type != "cuda":
                continue
            try:
                row.update(_variant(variant, enc, cfg, device, split))
            except Exception as e:  # one failing variant (e.g. out of memory) must not lose the others
                log.exception("bench %s %s failed", enc, variant)
                row[f"{variant}_error"] = f"{type(e).__name__}: {e}"[:300]
        row.update(_projection(row, cfg))
        if "H200" in name and enc in H200_CEILING:
            row["design_ceiling_img_per_s"] = H200_CEILING[enc]
        rows.append(row)
        if json_path:
            with open(json_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if on_row:
            on_row(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _projection(row: dict[str, Any], cfg: BenchConfig) -> dict[str, float]:
    """Hours for this depth's 9 paper configurations x 50 epochs, run one after another on this device."""
    best = max(row.get("loop_graph_img_per_s") or 0.0, row.get("loop_img_per_s") or 0.0)
    out: dict[str, float] = {}
    eval_s = cfg.eval_slices / row["eval_img_per_s"] if row.get("eval_img_per_s") else 0.0
    for key, ips in (("naive", row.get("naive_img_per_s")), ("ours", best or None)):
        if ips:
            epoch_s = cfg.train_slices / ips + eval_s
            out[f"paper_hours_{key}"] = CONFIGS_PER_DEPTH * PAPER_EPOCHS * epoch_s / 3600
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Whole-grid projection (sum over depths) in hours."""
    return {k: sum(r.get(k, 0.0) for r in rows) for k in ("paper_hours_naive", "paper_hours_ours")}


def bench_config(encoders: str, batch_size: int = 16, image_size: int | None = None, steps: int | None = None,
                 device: str = "auto", data: str | Path | None = None, gpu_steps: int = 30) -> BenchConfig:
    """The bench ``orch bench`` runs: ``encoders`` comma-separated registry names; sizes default to the GPU's
    (256 px, ``gpu_steps`` steps) or, without one, small CPU sizes; with prepared ``data``, the projection uses its
    slice counts. ConfigError for an unknown encoder or ``cuda`` without a visible GPU."""
    names = tuple(e.strip() for e in encoders.split(",") if e.strip())
    bad = [e for e in names if e not in list_encoders()]
    if bad:
        raise ConfigError(f"unknown encoders {bad}; choose from {', '.join(list_encoders())}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    gpu = device != "cpu" and torch.cuda.is_available()
    cfg = BenchConfig(encoders=names, batch_size=batch_size if gpu else min(batch_size, 4),
                      image_size=image_size or (256 if gpu else 64), steps=steps or (gpu_steps if gpu else 3),
                      warmup=8 if gpu else 1, slices=256 if gpu else 16, device=device)
    if data:
        from data_prep import PreparedData

        pd = PreparedData(data)
        n = {s: split_slices(pd, s) for s in ("train", "val", "test")}
        cfg = dataclasses.replace(cfg, train_slices=n["train"], eval_slices=n["val"] + n["test"], val_slices=n["val"])
    return cfg


def cpu_note(cfg: BenchConfig) -> str | None:
    """The warning a CPU run prints (its figures are not GPU figures); None on a GPU."""
    if cfg.device != "cpu" and torch.cuda.is_available():
        return None
    return (f"no GPU: CPU run at small sizes (batch {cfg.batch_size}, {cfg.image_size}px, {cfg.steps} steps); "
            "these are not GPU figures")

def _trial_epoch(encoder: str, cfg: BenchConfig, device_name: str, barrier=None) -> dict[str, Any]:
    """One paper-grid trial's short epoch on ``device_name``: ``cfg.steps`` of ``fit``'s step (captured where
    ``fit`` captures), ``fit``'s validation pass over ``cfg.slices`` slices and its ``last.pt`` (weights + Adam
    moments); each timed after a warm-up, all processes of a packing starting together at ``barrier``."""
    from orchestrator.training.checkpoint import save_checkpoint
    from orchestrator.training.inference import evaluate_split

    device = torch.device(device_name)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as fit() sets it
    tcfg = TrainConfig(encoder=encoder, batch_size=cfg.batch_size, lr=1e-4, optimizer="adam", **PAPER_SETTINGS)
    torch.manual_seed(0)
    model = create_model(tcfg.model).to(device).to(memory_format=torch.channels_last)
    parts = step_parts(model, tcfg, device)
    train = synthetic_split(max(cfg.slices, cfg.batch_size), cfg.image_size, device)
    val = synthetic_split(cfg.slices, cfg.image_size, device, seed=1)
    step = make_train_step(tcfg, parts, model, train, device)
    batches = [torch.arange(i, i + cfg.batch_size, device=device) % len(train) for i in range(cfg.steps)]

    def train_steps(n: int) -> None:
        model.train()
        for i in range(n):
            step(batches[i % len(batches)])

    def validate() -> None:
        evaluate_split(model, val, loss_fn=parts.loss_fn, amp_dtype=parts.amp_dtype, batch_size=tcfg.eval_batch_size)

    train_steps(cfg.warmup)  # includes the graph capture
    validate()
    if barrier is not None:
        barrier.wait()
    train_s, val_s = _time(lambda: train_steps(cfg.steps), 1, device), _time(validate, 1, device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        save_checkpoint(Path(tmp) / "last.pt", model=model.state_dict(), optimizer=parts.optimizer.state_dict())
        ckpt_s, ckpt_mb = time.perf_counter() - t0, (Path(tmp) / "last.pt").stat().st_size / 2**20
    return {"img_per_s": cfg.batch_size * cfg.steps / train_s, "val_s_per_slice": val_s / len(val),
            "ckpt_s": ckpt_s, "ckpt_mb": ckpt_mb, "mode": step.mode}


def _trial_process(encoder: str, cfg: BenchConfig, device_name: str, barrier, results) -> None:
    """A packed trial's process (spawned, as Ray starts one per trial): its epoch, or the error, onto ``results``."""
    try:
        results.put(_trial_epoch(encoder, cfg, device_name, barrier))
    except Exception as e:  # e.g. out of memory: the parent reports it instead of waiting forever
        barrier.abort()
        results.put({"error": f"{type(e).__name__}: {e}"[:300]})


def packed_epochs(encoder: str, cfg: BenchConfig, device_name: str, n: int) -> list[dict[str, Any]]:
    """``_trial_epoch`` in ``n`` concurrent processes sharing the device (in this process when ``n == 1``)."""
    if n == 1:
        return [_trial_epoch(encoder, cfg, device_name)]
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be forked; Ray's trial processes are fresh ones too
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_trial_process, args=(encoder, cfg, device_name, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    out = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return out


@dataclass(frozen=True)
class GridDepth:
    """One depth of a grid: its trials (configurations) and their epochs summed, and the sweep's GPU share."""

    encoder: str
    trials: int
    epochs: int
    share: float


def grid_projection(depth: GridDepth, epochs: list[dict[str, Any]], cfg: BenchConfig, n: int,
                    checkpoint_every: int = 1) -> dict[str, Any]:
    """Hours for ``depth``'s trials, ``n`` at a time, each epoch as measured (``epochs``: one per concurrent
    process): train slices at the measured per-trial rate, validation of ``cfg.val_slices``, a checkpoint every
    ``checkpoint_every`` epochs; a test pass over the other eval slices once per trial."""
    errors = [e["error"] for e in epochs if "error" in e]
    row: dict[str, Any] = {"encoder": depth.encoder, "trials": depth.trials, "share": depth.share, "concurrent": n}
    if errors:
        return row | {"error": errors[0]}
    ips = sum(e["img_per_s"] for e in epochs) / n
    val_s = cfg.val_slices * sum(e["val_s_per_slice"] for e in epochs) / n
    ckpt_s = sum(e["ckpt_s"] for e in epochs) / n
    epoch_s = cfg.train_slices / ips + val_s + ckpt_s / checkpoint_every
    test_s = max(cfg.eval_slices - cfg.val_slices, 0) * val_s / max(cfg.val_slices, 1)
    hours = (depth.epochs * epoch_s + depth.trials * test_s) / n / 3600
    return row | {"img_per_s_trial": ips, "img_per_s_total": ips * n, "val_s": val_s, "ckpt_s": ckpt_s,
                  "ckpt_mb": epochs[0]["ckpt_mb"], "epoch_s": epoch_s, "hours": hours, "mode": epochs[0]["mode"]}


def grid_depths(entries, shares: dict[str, float], order: list[str]) -> list[GridDepth]:
    """A grid's depths (``entries``: ``grids.load_grid``), in ``order`` (the sweep's), with their GPU ``shares``
    (1.0 for a depth the table does not know)."""
    by_enc: dict[str, list[int]] = {}
    for e in entries:
        by_enc.setdefault(e.config.encoder, []).append(e.config.epochs)
    rank = {name: i for i, name in enumerate(order)}
    return [GridDepth(enc, len(ep), sum(ep), shares.get(enc, 1.0))
            for enc, ep in sorted(by_enc.items(), key=lambda kv: rank.get(kv[0], len(rank)))]


def run_grid_bench(cfg: BenchConfig, depths: list[GridDepth], on_row=None) -> list[dict[str, Any]]:
    """``grid_projection`` of every depth (in ``depths``' order), each measured with its packing on this device:
    ``round(1 / share)`` concurrent trials on a GPU, one at a time on a CPU (CPU trials do not share a GPU)."""
    gpu = cfg.device != "cpu" and torch.cuda.is_available()
    device_name = "cuda" if gpu else "cpu"
    rows = []
    for d in depths:
        n = max(1, round(1 / d.share)) if gpu else 1
        try:
            epochs = packed_epochs(d.encoder, cfg, device_name, n)
        except Exception as e:  # one depth failing (out of memory) must not lose the others
            epochs = [{"error": f"{type(e).__name__}: {e}"[:300]}]
        rows.append(grid_projection(d, epochs, cfg, n))
        if on_row:
            on_row(rows[-1])
        if gpu:
            torch.cuda.empty_cache()
    return rows
