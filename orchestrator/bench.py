"""``orch bench``: images/s of one training step per encoder depth, three ways, in one run.

- ``naive``: fp32, eager, NCHW, a float batch already on the device, default Adam, torch's default flags (what a
  plain script does; cuDNN may use TF32 for convolutions); ``naive_strict``: the same with TF32 off;
- ``loop``: our step -- uint8 data on the device, gather + GPU augmentation + normalisation, bf16 autocast,
  channels-last, fused Adam -- eager;
- ``loop_graph``: the same step captured as one CUDA graph (what ``fit`` runs when ``cuda_graph`` is on/auto).

Each variant: warm-up steps, then ``steps`` timed steps (host clock around a device sync), peak device memory.
Also: eval forward images/s, and a projection of the paper grid's wall time (45 configurations x 50 epochs;
9 configurations per depth) on this machine. On a CPU it runs small sizes and says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
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
    eval_slices: int = FULL_EVAL_SLICES
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
        log.warning("no CUDA device: benchmarking on the CPU at small sizes; figures are not GPU figures")
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
                 device: str = "auto", data: str | Path | None = None) -> BenchConfig:
    """The bench ``orch bench`` runs: ``encoders`` comma-separated registry names; sizes default to the GPU's
    (256 px, 30 steps) or, without one, small CPU sizes; with prepared ``data``, the projection uses its slice
    counts. ConfigError for an unknown encoder or ``cuda`` without a visible GPU."""
    names = tuple(e.strip() for e in encoders.split(",") if e.strip())
    bad = [e for e in names if e not in list_encoders()]
    if bad:
        raise ConfigError(f"unknown encoders {bad}; choose from {', '.join(list_encoders())}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    gpu = device != "cpu" and torch.cuda.is_available()
    cfg = BenchConfig(encoders=names, batch_size=batch_size if gpu else min(batch_size, 4),
                      image_size=image_size or (256 if gpu else 64), steps=steps or (30 if gpu else 3),
                      warmup=8 if gpu else 1, slices=256 if gpu else 16, device=device)
    if data:
        from data_prep import PreparedData

        pd = PreparedData(data)
        n = {s: split_slices(pd, s) for s in ("train", "val", "test")}
        cfg = dataclasses.replace(cfg, train_slices=n["train"], eval_slices=n["val"] + n["test"])
    return cfg


def cpu_note(cfg: BenchConfig) -> str | None:
    """The warning a CPU run prints (its figures are not GPU figures); None on a GPU."""
    if cfg.device != "cpu" and torch.cuda.is_available():
        return None
    return (f"no GPU: CPU run at small sizes (batch {cfg.batch_size}, {cfg.image_size}px, {cfg.steps} steps); "
            "these are not GPU figures")


BENCH_COLUMNS = ("encoder", "naive fp32", "strict fp32", "loop", "loop graph", "x naive", "peak GiB", "paper grid h")


def bench_table(cfg: BenchConfig):
    """An empty rich table of ``BENCH_COLUMNS``; :func:`add_bench_row` fills it as rows come."""
    from rich.table import Table

    table = Table(title=f"orch bench: images/s, batch {cfg.batch_size}, {cfg.image_size}px")
    for c in BENCH_COLUMNS:
        table.add_column(c, justify="right")
    return table


def _cell(v: Any) -> str:
    """A figure as the table shows it: 4 decimals under 10, 1 from 10 up; "-" when missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return (f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}") if isinstance(v, float) else str(v)


def add_bench_row(table, r: dict[str, Any]) -> None:
    """One encoder's row of :func:`run_bench` into ``table``."""
    best = max(r.get("loop_graph_img_per_s") or 0, r.get("loop_img_per_s") or 0)
    speedup = _cell(best / r["naive_img_per_s"]) if r.get("naive_img_per_s") else "-"
    table.add_row(r["encoder"], _cell(r.get("naive_img_per_s")), _cell(r.get("naive_strict_img_per_s")),
                  _cell(r.get("loop_img_per_s")), _cell(r.get("loop_graph_img_per_s")), speedup,
                  _cell(r.get("loop_graph_peak_gib") or r.get("loop_peak_gib")), _cell(r.get("paper_hours_ours")))


def projection_line(cfg: BenchConfig, rows: list[dict[str, Any]]) -> str:
    """The paper grid's projected wall time on this device, summed over the depths run."""
    s = summary(rows)
    every_depth = set(cfg.encoders) >= set(list_encoders())
    return (f"paper grid (45 configurations x 50 epochs, one after another on this device, train "
            f"{cfg.train_slices} + eval {cfg.eval_slices} slices/epoch): ours {s['paper_hours_ours']:.2f} h, "
            f"naive {s['paper_hours_naive']:.2f} h" + ("" if every_depth else " (only the depths run)"))
