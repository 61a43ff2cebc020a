"""How different are MemVir's virtual classes from the real ones?

A virtual class is a real class's proxy as it was (M+1)·j steps ago (j = 1 … N). When the
proxies hardly move between snapshots, the virtual class of c is a near copy of c's current
proxy, yet the loss treats it as a negative of c: the loss then cannot fall below about
log(1 + n) for NormSoftmax, and the gradient pulls an embedding towards its proxy and pushes
it from the proxy's copies at once. This script reads MemVir checkpoints that hold the
callback's memory (``last.ckpt``, or the best checkpoints of runs with
``callbacks.model_checkpoint.save_weights_only=false``, as benchmarks/quality.py writes them)
and reports, per checkpoint:

- ``cos(W_c, W_c^(j))``: the cosine between each class's current proxy and its snapshot in
  virtual block j, averaged over classes (1.0 = an exact copy);
- ``nearest other class``: the cosine between each current proxy and the closest *other*
  real class's proxy, averaged over classes — how close a genuine negative is;
- ``stale rows nearest own``: the share of the memory rows (past embeddings of class c) whose
  nearest current proxy is c's own, i.e. for which the virtual label contradicts what the
  model now believes.

A run whose ``parts`` keeps no proxy snapshots (``memory_rows``) has no cosines to its
snapshots, one that keeps no rows (``virtual_proxies``, ``virtual_proxies_masked``) no stale
rows; those cells read "–".

    python benchmarks/memvir_drift.py benchmarks/quality_work/glyphs_cnn_few/*memvir*/checkpoints/*.ckpt \
        --out benchmarks/results/quality_memvir_drift.md
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from memvir_pl.checkpoint import load_checkpoint
from memvir_pl.memory import VirtualClassMemory


def _memory(checkpoint: dict) -> VirtualClassMemory:
    for name, state in checkpoint.get("callbacks", {}).items():
        if name.startswith("MemVirCallback"):
            memory_state = state["memory"]
            memory = VirtualClassMemory(memory_state["num_steps"], memory_state["step_gap"],
                                        storage_dtype=memory_state["storage_dtype"],
                                        proxy_mode=memory_state["proxy_mode"],
                                        store_rows=memory_state.get("store_rows", True),
                                        store_proxies=memory_state.get("store_proxies", True))
            memory.load_state_dict(memory_state)
            return memory
    raise ValueError(
        "the checkpoint holds no MemVirCallback state: pass a MemVir run's last.ckpt, or best checkpoints "
        "(epoch_*.ckpt) written with callbacks.model_checkpoint.save_weights_only=false (as benchmarks/quality.py "
        "does); by default they hold the weights only."
    )


def _proxies(checkpoint: dict) -> torch.Tensor:
    keys = [k for k in checkpoint["state_dict"] if k.endswith("proxies")]
    if len(keys) != 1:
        raise ValueError(f"expected one proxy matrix in the state_dict, found {keys}")
    return checkpoint["state_dict"][keys[0]].float()


def drift(checkpoint: dict) -> dict[str, float | list[float]]:
    """The statistics of one checkpoint (see the module docstring); cosines in [-1, 1]."""
    memory = _memory(checkpoint)
    current = F.normalize(_proxies(checkpoint), dim=1)  # (C, D)
    num_classes = current.shape[0]
    similarity = current @ current.T
    similarity.fill_diagonal_(-2.0)
    own, nearest_own = [], []
    items = memory.recall()
    for item in items:  # a field the run's memory does not keep is None
        if item.proxies is not None:
            stale = F.normalize(item.proxies.float(), dim=1)
            own.append((current * stale).sum(1).mean().item())
        if item.embeddings is not None:
            rows = F.normalize(item.embeddings.float(), dim=1)
            nearest_own.append(((rows @ current.T).argmax(1) == item.labels).float().mean().item())
    return {
        "epoch": int(checkpoint["epoch"]),
        "step": int(checkpoint["global_step"]),
        "blocks": len(items),
        "classes": num_classes,
        "own_copy_cos": own,
        "nearest_other_cos": similarity.max(1).values.mean().item(),
        "stale_rows_nearest_own": statistics.fmean(nearest_own) if nearest_own else float("nan"),
    }


def report(paths: Sequence[Path], command: str) -> str:
    """A markdown table, one row per checkpoint."""
    lines = [
        "# MemVir's virtual classes against the real ones", "", f"Command: `{command}`", "",
        "cos(W_c, W_c^(j)): current proxy of a class against its snapshot in virtual block j "
        "(j = 1 is the newest, (M+1) steps old), mean over classes. Nearest other class: mean over "
        "classes of the largest cosine to another current proxy. Stale rows nearest own: share of "
        "memory rows whose nearest current proxy is their own class.", "",
        "| run | checkpoint | epoch | step | blocks | cos(W_c, W_c^(j)), j = 1 … n | nearest other class "
        "| stale rows nearest own |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        stats = drift(load_checkpoint(path))
        cosines = " / ".join(f"{c:.4f}" for c in stats["own_copy_cos"])
        cosines = cosines or ("– (no proxy snapshots)" if stats["blocks"] else "– (memory empty)")
        stale = stats["stale_rows_nearest_own"]
        stale_text = "–" if math.isnan(stale) else f"{100 * stale:.1f} %"
        lines.append(f"| {path.parent.parent.name} | {path.name} | {stats['epoch']} | {stats['step']} | "
                     f"{stats['blocks']} | {cosines} | {stats['nearest_other_cos']:.4f} | {stale_text} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.checkpoints if not p.is_file()]
    if missing:
        parser.error(f"checkpoint(s) not found: {missing}; run benchmarks/quality.py first")
    command = "python benchmarks/memvir_drift.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = report(args.checkpoints, command)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
