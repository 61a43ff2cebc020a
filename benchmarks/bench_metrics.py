"""Benchmark RetrievalMetrics (each kNN backend) against pytorch-metric-learning's AccuracyCalculator.

At the test-set sizes of CUB-200-2011, CARS196 and Stanford Online Products,
with clustered, L2-normalised 512-d embeddings, each (size, runner) pair runs
in its own subprocess, which reports the wall time of the metric computation,
its peak resident set (``ru_maxrss``), the resident set just before it, and the
metric values. The table gives ratios ours / PML and whether the values agree.

    python benchmarks/bench_metrics.py                       # cub, cars, sop (a few minutes)
    python benchmarks/bench_metrics.py --sizes cub,cars      # quick
    python benchmarks/bench_metrics.py --device cuda         # torch CUDA / faiss GPU (see gpu_check.sh)

PML is run as the field uses it: ``AccuracyCalculator(k="max_bin_count")``
with its default faiss kNN (``IndexFlatL2``, on CPU faiss; on normalised
embeddings it ranks exactly as cosine similarity).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = {  # name: (test items, classes, smallest class, largest class)
    "cub": (5924, 100, None, None),
    "cars": (8131, 98, None, None),
    "sop": (60502, 11316, 2, 12),
}
RUNNERS = ("torch", "faiss", "pml")
COMPARED = {
    "recall@1": "precision_at_1",
    "r_precision": "r_precision",
    "map@r": "mean_average_precision_at_r",
}
BATCH = 1000  # rows per RetrievalMetrics.update, as a validation loop would feed them


def class_sizes(name: str, seed: int):
    """Items per class (C,) summing to the dataset's test-set size."""
    import torch

    total, classes, low, high = SIZES[name]
    if low is None:  # near-equal classes (CUB, CARS)
        return torch.full((classes,), total // classes).index_add_(
            0, torch.arange(total % classes), torch.ones(total % classes, dtype=torch.long)
        )
    g = torch.Generator().manual_seed(seed)
    sizes = torch.full((classes,), low)
    while (left := total - int(sizes.sum())) > 0:  # spread the rest, capped at `high`
        open_classes = (sizes < high).nonzero().squeeze(1)
        pick = open_classes[torch.randint(open_classes.numel(), (left,), generator=g)]
        sizes.index_add_(0, pick, torch.ones_like(pick))
        sizes.clamp_max_(high)
    return sizes


def clustered_embeddings(name: str, dim: int, seed: int, spread: float):
    """L2-normalised (N, dim) float32 embeddings around one centre per class, and labels (N,)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    sizes = class_sizes(name, seed)
    labels = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    centres = torch.randn(sizes.numel(), dim, generator=g)
    x = torch.randn(labels.numel(), dim, generator=g).mul_(spread)
    for rows in torch.arange(labels.numel()).split(4096):  # in place: no (N, dim) temporaries
        x[rows] += centres[labels[rows]]
        x[rows] /= x[rows].norm(dim=1, keepdim=True)
    return x, labels


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def run_child(args: argparse.Namespace) -> None:
    """Measure one runner on one size; print a JSON line."""
    import torch

    x, labels = clustered_embeddings(args.size, args.dim, args.seed, args.spread)
    device = torch.device(args.device)
    x, labels = x.to(device), labels.to(device)
    if args.runner == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(
            include=tuple(COMPARED.values()), k="max_bin_count", device=device
        )
        compute = lambda: calc.get_accuracy(x, labels)  # noqa: E731
    else:
        from memvir_pl.metrics import RetrievalMetrics

        metric = RetrievalMetrics(k=(1, 2, 4, 8), backend=args.runner).to(device)

        def compute():
            for rows in torch.arange(labels.numel(), device=device).split(BATCH):
                metric.update(x[rows], labels[rows], rows)
            out = metric.compute()
            return {COMPARED[k]: v for k, v in out.items() if k in COMPARED} | out

    extra = {}
    if args.runner == "faiss":
        import faiss

        extra["faiss_gpus"] = faiss.get_num_gpus()
    before = resident_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    values = compute()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        extra["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record = {"seconds": seconds, "peak_mib": peak, "before_mib": before, "values": values}
    print(json.dumps(record | extra))


def launch(size: str, runner: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--size", size, "--runner", runner]
    cmd += ["--device", args.device, "--dim", str(args.dim), "--seed", str(args.seed)]
    cmd += ["--spread", str(args.spread)]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [_SRC, os.environ.get("PYTHONPATH")]))
    }
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{size}/{runner} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


_SRC = str(Path(__file__).resolve().parents[1] / "src")


def measure(size: str, runners: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """Each runner ``--repeat`` times, in alternating order (so CPU load from other
    processes hits all runners alike); the median time and the largest peak are kept."""
    runs: dict[str, list[dict]] = {runner: [] for runner in runners}
    for rep in range(args.repeat):
        for runner in runners if rep % 2 == 0 else runners[::-1]:
            runs[runner].append(launch(size, runner, args))
    return {
        runner: records[0]
        | {
            "seconds": statistics.median(r["seconds"] for r in records),
            "peak_mib": max(r["peak_mib"] for r in records),
        }
        for runner, records in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="cub,cars,sop", help="comma list of " + ",".join(SIZES))
    parser.add_argument(
        "--runners", default=",".join(RUNNERS), help="comma list of " + ",".join(RUNNERS)
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (PML always runs as configured by it)"
    )
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--spread", type=float, default=2.2, help="noise std per dimension (centres: 1)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per runner (median time)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per subprocess")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--runner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    sizes = args.sizes.split(",")
    runners = args.runners.split(",")
    unknown = [s for s in sizes if s not in SIZES] + [r for r in runners if r not in RUNNERS]
    if unknown:
        parser.error(
            f"unknown sizes/runners {unknown}; sizes: {list(SIZES)}, runners: {list(RUNNERS)}"
        )
    print(
        f"device={args.device} dim={args.dim} cpus={os.cpu_count()} seed={args.seed} "
        f"spread={args.spread} repeat={args.repeat} (median time, largest peak RSS)"
    )
    header = (
        "| size | N | runner | time s | peak RSS MiB | RSS before MiB | time ours/PML "
        "| peak ours/PML | max abs diff vs PML | R@1 | RP | MAP@R |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for size in sizes:
        results = measure(size, runners, args)
        pml = results.get("pml")
        for runner, r in results.items():
            v = r["values"]
            ratios = diff = "-"
            if pml is not None and runner != "pml":
                ratios = (
                    f"{r['seconds'] / pml['seconds']:.2f}",
                    f"{r['peak_mib'] / pml['peak_mib']:.2f}",
                )
                diff = f"{max(abs(v[k] - pml['values'][k]) for k in COMPARED.values()):.1e}"
            time_ratio, peak_ratio = ratios if isinstance(ratios, tuple) else (ratios, ratios)
            extra = "".join(f" {k}={r[k]:.0f}" for k in ("faiss_gpus", "cuda_peak_mib") if k in r)
            print(
                f"| {size} | {SIZES[size][0]} | {runner}{extra} | {r['seconds']:.1f} | {r['peak_mib']:.0f} "
                f"| {r['before_mib']:.0f} | {time_ratio} | {peak_ratio} | {diff} "
                f"| {v['precision_at_1']:.4f} | {v['r_precision']:.4f} | {v['mean_average_precision_at_r']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
