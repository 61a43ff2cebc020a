"""EfficientNet-Lite0 training-step and evaluation time on CPU, per input size and frozen stages.

Sizes the emoji quality regimes: one training step is the EmbeddingNet (frozen
BatchNorm statistics, 512-d) + NormSoftmax over ``--classes`` proxies, backward and Adam
(the official optimiser), on a batch of ``--batch`` images; evaluation is a no-grad forward of
the same batch. Variants are timed in round-robin order in one process (``--reps`` rounds after
one warm-up round), so the ratios to the first variant are measured side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_effnet_step.py --sizes 48 64 --freeze 0 2 4 6
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from memvir_pl.losses import NormSoftmax
from memvir_pl.models import EmbeddingNet

RESULTS = Path(__file__).resolve().parent / "results"


def train_step(size: int, freeze: int, batch: int, classes: int) -> Callable[[], None]:
    """One optimiser step of the regime's model and loss on random images (3, size, size)."""
    net = EmbeddingNet("efficientnet_lite0", embedding_dim=512, freeze_bn=True, freeze_stages=freeze)
    loss = NormSoftmax(num_classes=classes, embedding_dim=512)
    optimiser = torch.optim.Adam(
        [{"params": [p for p in net.parameters() if p.requires_grad], "lr": 1e-4},
         {"params": loss.parameters(), "lr": 1e-2}], eps=0.01, weight_decay=1e-4)
    images, labels = torch.randn(batch, 3, size, size), torch.randint(classes, (batch,))

    def step() -> None:
        optimiser.zero_grad()
        loss(net(images), labels).backward()
        optimiser.step()

    return step


def eval_step(size: int, batch: int) -> Callable[[], None]:
    """A no-grad forward of ``batch`` images (3, size, size) in eval mode."""
    net = EmbeddingNet("efficientnet_lite0", embedding_dim=512, freeze_bn=True).eval()
    images = torch.randn(batch, 3, size, size)

    def step() -> None:
        with torch.no_grad():
            net(images)

    return step


def time_round_robin(steps: dict[str, Callable[[], None]], reps: int) -> dict[str, float]:
    """Median seconds per call of each step, one warm-up round then ``reps`` interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(reps + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: Sequence[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[48, 64])
    p.add_argument("--freeze", nargs="+", type=int, default=[0, 2, 4, 6])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "effnet_step.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = {f"train {s} px, freeze_stages={k}": train_step(s, k, args.batch, args.classes)
             for s in args.sizes for k in args.freeze}
    steps |= {f"eval {s} px": eval_step(s, args.batch) for s in args.sizes}
    seconds = time_round_robin(steps, args.reps)
    first = next(iter(seconds.values()))
    lines = [
        "# EfficientNet-Lite0 step time on CPU", "",
        f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python "
        + " ".join(["benchmarks/bench_effnet_step.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
        + "`",
        "",
        f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.classes} classes, "
        f"NormSoftmax, Adam; median of {args.reps} round-robin rounds; load average before: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine: absolute times are "
        "indicative, ratios are side by side).", "",
        "| step | seconds | ratio to the first row |", "|---|---|---|",
        *(f"| {name} | {s:.2f} | {s / first:.2f} |" for name, s in seconds.items()), "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(args.out.read_text())
    return args.out


if __name__ == "__main__":
    main()
