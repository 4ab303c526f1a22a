"""One optimizer step on the CPU, fused vs foreach, for a ResNet-UNet's parameters (why ``make_optimizer`` asks
for fused kernels on the CPU too). Gradients are random: only the update's cost is measured.

    python benchmarks/cpu_optimizer.py --encoder resnet152 --threads 1 --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models import count_parameters, create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="resnet152")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions of --steps steps each")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model(args.encoder)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    print(f"{args.encoder}-UNet: {count_parameters(model) / 1e6:.1f} M parameters, {args.threads} thread(s)")
    variants = {
        "adam": lambda **kw: torch.optim.Adam(params, lr=1e-3, **kw),
        "adamw": lambda **kw: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4, **kw),
        "sgd": lambda **kw: torch.optim.SGD(params, lr=1e-3, momentum=0.9, **kw),
        "rmsprop": lambda **kw: torch.optim.RMSprop(params, lr=1e-3, **kw),
    }
    for name, make in variants.items():
        row = []
        for kind in ("foreach", "fused"):
            try:
                opt = make(**{kind: True})
                opt.step()  # state allocation outside the timing
            except (RuntimeError, TypeError):  # torch has no fused RMSprop
                row.append(f"{kind} -")
                continue
            times = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    opt.step()
                times.append((time.perf_counter() - t0) / args.steps * 1e3)
            row.append(f"{kind} {statistics.median(times):.0f} ms (min {min(times):.0f})")
        print(f"{name:8s} " + " | ".join(row))


if __name__ == "__main__":
    main()
