"""Cost of MemVir's bookkeeping in a training step, and the bank's size; ratios measured side by side.

A step is the embedding head (Linear 1024 -> 512, L2-normalised) plus a
NormSoftmax loss, backward and Adam, at B=128, D=512. Variants, timed in
round-robin order in one process once the memory is full:

- plain:      no MemVir (C classes)
- ideal:      the loss on the same (n+1)-block input with the memory already
              laid out in one tensor: what MemVir costs with free bookkeeping
- ours:       MemVirCallback + VirtualClassMemory (recall, concatenate, push)
- naive:      the same rule over Python lists of cloned tensors, re-sliced
              every step (the official code's approach)

Whole steps are noisy at the scale of the bookkeeping, so the bookkeeping is
also timed on its own: the expansion of one step (recall, concatenate, push)
by ours against the ideal's single concatenation, 300 times each, and
bookkeeping share = (expand ours - expand ideal) / step ours.
Then the bank's bytes for exact and saving mode at SOP scale (C=11,318,
D=512, N=5, M=100), and for each value of ``MemVirCallback(parts=...)``
(the memory keeps only what a part uses) at CUB/CARS and SOP scale, exact
mode; both computed with ``VirtualClassMemory.bank_bytes``, without
allocating a bank.

Last, the cost of the losses' input checks (label range and finiteness,
which read values back and so make the host wait for the device): plain
steps (no MemVir) with the checks on every call, on the default schedule
(the first calls, then every ``check_every``-th) and off, timed as blocks of
back-to-back steps with one device sync per block (so a check's sync
shows as lost overlap), as ratios to "off". ``--device cuda`` times them on
a GPU, where the sync matters; on the CPU only the checks' arithmetic does.

    python benchmarks/bench_memvir_step.py [--classes 98 11318] [--reps 30 5] [--device cpu] [--only checks]
    python benchmarks/bench_memvir_step.py --only parts   # the bank per part only (no timing, instant)
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memvir_pl import MemVirCallback, VirtualClassMemory
from memvir_pl.extensions.memvir import PART_INPUTS
from memvir_pl.losses import NormSoftmax
from memvir_pl.losses.base import check_values

B, D, FEATURES = 128, 512, 1024

# (scale, classes C, num_steps N, step_gap M) of the bank-per-part table; B and D as above
PART_SCALES = (
    ("CUB/CARS", 100, 5, 50),
    ("CARS official", 100, 45, 10),
    ("SOP", 11318, 5, 100),
)


class NaiveMemVir:
    """The rule over Python lists: clone everything each step, reverse and slice to select."""

    def __init__(self, num_steps: int, step_gap: int) -> None:
        self.num_steps, self.step_gap = num_steps, step_gap
        self.items: list[tuple[Tensor, Tensor, Tensor]] = []

    def __call__(self, loss, embeddings, labels, proxies):
        newest_first = list(reversed(self.items))
        chosen = newest_first[self.step_gap :: self.step_gap + 1][: self.num_steps]
        C = loss.num_classes
        out = (
            torch.cat([embeddings] + [e for e, _, _ in chosen]),
            torch.cat([labels] + [y + (j + 1) * C for j, (_, y, _) in enumerate(chosen)]),
            torch.cat([proxies] + [p for _, _, p in chosen]),
            (len(chosen) + 1) * C,
        )
        self.items.append((F.normalize(embeddings.detach(), dim=1).clone(), labels.clone(), proxies.detach().clone()))
        if len(self.items) > self.num_steps * (self.step_gap + 1):
            self.items.pop(0)
        return out


def build(num_classes: int, seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    head = nn.Linear(FEATURES, D).to(device)
    loss = NormSoftmax(num_classes, D).to(device)
    loss.check_inputs = False  # time the rule, not the input checks
    optimizer = torch.optim.Adam([*head.parameters(), loss.proxies], lr=1e-4)
    features = torch.randn(B, FEATURES, device=device)
    labels = torch.randint(0, num_classes, (B,), device=device)
    return head, loss, optimizer, features, labels


def step(head, loss, optimizer, features, labels) -> None:
    embeddings = F.normalize(head(features), dim=1)
    loss(embeddings, labels).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def variants(num_classes: int, num_steps: int, step_gap: int):
    """Name -> zero-argument callable running one training step, memory already full.

    Also ``expand ours`` / ``expand ideal``: the expansion alone (no loss, no backward).
    """
    fill = num_steps * (step_gap + 1)
    runs = {}

    plain = build(num_classes)
    runs["plain"] = lambda: step(*plain)

    ours = build(num_classes)
    callback = MemVirCallback(num_steps, step_gap)
    callback.loss = ours[1]
    ours[1].batch_expander = callback.expand_batch
    callback.on_train_epoch_start(SimpleNamespace(current_epoch=0), None)

    def ours_step():
        callback.on_train_batch_start(None, None, None, 0)
        step(*ours)

    for _ in range(fill):  # fill the bank without paying for the loss
        callback.memory.push(torch.randn(B, D), torch.randint(0, num_classes, (B,)), ours[1].proxies.detach())
    runs["ours"] = ours_step

    naive = build(num_classes)
    naive_rule = NaiveMemVir(num_steps, step_gap)
    for _ in range(fill):
        naive_rule.items.append((torch.randn(B, D), torch.randint(0, num_classes, (B,)), naive[1].proxies.detach().clone()))
    naive[1].batch_expander = naive_rule
    runs["naive"] = lambda: step(*naive)

    ideal = build(num_classes)
    memory_rows = torch.randn(num_steps * B, D)
    memory_labels = torch.randint(0, num_classes, (num_steps * B,)) + num_classes
    memory_proxies = ideal[1].proxies.detach().repeat(num_steps, 1)

    def laid_out(loss, embeddings, labels, proxies):
        return (torch.cat([embeddings, memory_rows]), torch.cat([labels, memory_labels]),
                torch.cat([proxies, memory_proxies]), (num_steps + 1) * num_classes)

    ideal[1].batch_expander = laid_out
    runs["ideal"] = lambda: step(*ideal)

    embeddings = F.normalize(torch.randn(B, D, requires_grad=True), dim=1)
    labels = torch.randint(0, num_classes, (B,))

    def expand_ours():
        callback.on_train_batch_start(None, None, None, 0)
        callback.expand_batch(ours[1], embeddings, labels, ours[1].proxies)

    expansions = {"expand ours": expand_ours,
                  "expand ideal": lambda: laid_out(ideal[1], embeddings, labels, ideal[1].proxies)}
    return runs, expansions


def time_variants(runs, reps: int, warmup: int = 2) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(warmup + reps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def check_variants(num_classes: int, device: str):
    """Name -> one plain training step, with the loss's input checks every call, scheduled or off."""
    runs = {}
    for name, check_inputs, check_every in (("off", False, 1), ("every call", True, 1), ("scheduled", True, None)):
        parts = build(num_classes, device=device)
        parts[1].check_inputs = check_inputs
        if check_every is not None:
            parts[1].check_every = check_every
        runs[name] = lambda parts=parts: step(*parts)
    return runs


def time_value_checks(num_classes: int, device: str) -> float:
    """Seconds of one call of the value checks (label range, finiteness; one host read) on a (B, D) batch."""
    embeddings = torch.randn(B, D, device=device)
    labels = torch.randint(0, num_classes, (B,), device=device)
    return time_variants({"checks": lambda: check_values("L", embeddings, labels, num_classes)}, 300, 10)["checks"]


def time_blocks(runs, device: str, steps: int, blocks: int, warmup: int = 1) -> dict[str, float]:
    """Seconds per step: blocks of ``steps`` back-to-back steps, one device sync per block, round-robin."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for block in range(warmup + blocks):
        for name, run in runs.items():
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                run()
            sync()
            if block >= warmup:
                times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def print_step_table(args: argparse.Namespace) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={B}, D={D}, "
          f"N={args.num_steps}, M={args.step_gap} (memory full)\n")
    print("| C | plain ms | ours / plain | ideal / plain | naive / plain | naive / ours | "
          "expand ours / ideal (us) | bookkeeping share of our step |")
    print("|---|---|---|---|---|---|---|---|")
    for num_classes, reps in zip(args.classes, args.reps, strict=True):
        runs, expansions = variants(num_classes, args.num_steps, args.step_gap)
        t = time_variants(runs, reps)
        t.update(time_variants(expansions, 300, warmup=10))
        share = (t["expand ours"] - t["expand ideal"]) / t["ours"]
        print(f"| {num_classes} | {1e3 * t['plain']:.1f} | {t['ours'] / t['plain']:.2f} | {t['ideal'] / t['plain']:.2f} | "
              f"{t['naive'] / t['plain']:.2f} | {t['naive'] / t['ours']:.2f} | "
              f"{1e6 * t['expand ours']:.0f} / {1e6 * t['expand ideal']:.0f} | {100 * share:.2f}% |")


def print_bank_table() -> None:
    print("\nBank at SOP scale (C=11,318, D=512, B=128, N=5, M=100):\n")
    print("| mode | dtype | bytes (GB) | measured after filling (GB) |")
    print("|---|---|---|---|")
    for mode, dtype in (("exact", torch.float32), ("saving", torch.float32), ("saving", torch.bfloat16)):
        planned = VirtualClassMemory.bank_bytes(5, 100, B, D, 11318, proxy_mode=mode, dtype=dtype)
        measured = "(not allocated: too large here)"
        if mode == "saving":
            memory = VirtualClassMemory(5, 100, storage_dtype=dtype, proxy_mode=mode)
            memory.push(torch.zeros(B, D), torch.zeros(B, dtype=torch.long), torch.zeros(11318, D))
            measured = f"{memory.nbytes() / 1e9:.3f}"
        print(f"| {mode} | {str(dtype).removeprefix('torch.')} | {planned / 1e9:.3f} | {measured} |")


def print_parts_table() -> None:
    print(f"\nBank per `parts` (exact mode, float32, B={B}, D={D}; bytes kept and their share of the full bank):\n")
    print("| parts | keeps | " + " | ".join(f"{name}, C={c:,}, N={n}, M={m}" for name, c, n, m in PART_SCALES) + " |")
    print("|---|---|" + "---|" * len(PART_SCALES))
    for part, uses in PART_INPUTS.items():
        keeps = " + ".join(name for name, used in (("rows", uses.rows), ("proxies", uses.proxies)) if used)
        cells = []
        for _, classes, num_steps, step_gap in PART_SCALES:
            full = VirtualClassMemory.bank_bytes(num_steps, step_gap, B, D, classes)
            held = VirtualClassMemory.bank_bytes(num_steps, step_gap, B, D, classes,
                                                 store_rows=uses.rows, store_proxies=uses.proxies)
            cells.append(f"{held / 1e9:.3f} GB ({100 * held / full:.1f}%)")
        print(f"| {part} | {keeps} | " + " | ".join(cells) + " |")


def print_check_table(args: argparse.Namespace) -> None:
    print(f"\nInput checks of the loss (plain steps, no MemVir, device {args.device}, "
          f"{torch.get_num_threads()} threads; check_every default {NormSoftmax(2, 2).check_every}):\n")
    print("| C | step ms, checks off | every call / off | scheduled / off | value checks alone (us) |")
    print("|---|---|---|---|---|")
    for num_classes in args.classes:
        runs = check_variants(num_classes, args.device)
        t = time_blocks(runs, args.device, 100, args.check_blocks)
        alone = time_value_checks(num_classes, args.device)
        print(f"| {num_classes} | {1e3 * t['off']:.2f} | {t['every call'] / t['off']:.3f} | "
              f"{t['scheduled'] / t['off']:.3f} | {1e6 * alone:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[98, 11318])
    parser.add_argument("--reps", type=int, nargs="+", default=[30, 5], help="timed steps per class count")
    parser.add_argument("--num-steps", type=int, default=5)
    parser.add_argument("--step-gap", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="device of the input-check timing (cpu, cuda)")
    parser.add_argument("--check-blocks", type=int, default=7, help="timed blocks of 100 steps per variant")
    parser.add_argument("--only", choices=("step", "bank", "parts", "checks"), help="print one table only")
    args = parser.parse_args()
    if args.only in (None, "step"):
        print_step_table(args)
    if args.only in (None, "bank"):
        print_bank_table()
    if args.only in (None, "parts"):
        print_parts_table()
    if args.only in (None, "checks"):
        print_check_table(args)


if __name__ == "__main__":
    main()
