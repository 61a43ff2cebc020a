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

With ``--gradients`` it also rebuilds each run from its checkpoint (its saved config, its data
on this machine) and embeds up to ``--rows`` training images (the first ones, evaluation
transform) to measure what the own-class old proxies do to a row of class c. Their push is
the change they make to the row's descent direction, ``-(grad L - grad L_masked)`` for the
row's loss over the current and virtual proxies (``L_masked``: the same loss with c's own
snapshots removed from the row's logits, as ``parts=virtual_proxies_masked`` trains), and:

- ``push · motion``: its cosine with the motion of c's current proxy since the newest snapshot,
  ``W_c - W_c^(1)``, both projected onto the plane tangent to the row's direction (the part a
  gradient step can move): > 0 = the push moves the row along the way its proxy is moving;
- ``push · own proxy``: its cosine with the pull towards c's current proxy (tangent part of
  ``W_c``): < 0 = the push works against the pull;
- ``|push| / |grad|``: its size against the row's whole gradient.

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


def _tangent(vectors: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``vectors`` (B, D) without their component along the unit ``directions`` (B, D)."""
    return vectors - (vectors * directions).sum(1, keepdim=True) * directions


def _mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b, dim=1, eps=1e-12).mean().item()


def push_statistics(loss: torch.nn.Module, embeddings: torch.Tensor, labels: torch.Tensor,
                    blocks: Sequence[torch.Tensor]) -> dict[str, float]:
    """The own-class old proxies' push on rows ``embeddings`` (B, D) of ``labels`` (B,) under ``loss``
    (a memvir_pl loss with ``logit_mask``) with the snapshots ``blocks`` (each (C*K, D), newest first):
    the mean cosines and size ratio of the module docstring."""
    from memvir_pl.extensions.memvir import own_class_copies

    # float64: the push is a small difference of two gradients
    rows = embeddings.detach().double().clone().requires_grad_(True)
    current = loss.class_proxies().detach().double()
    num_classes = loss.num_classes
    proxies = torch.cat([current, *(b.double() for b in blocks)])
    virtual_classes = (len(blocks) + 1) * num_classes

    def row_gradient(mask: torch.Tensor | None) -> torch.Tensor:
        value = loss.compute(rows, labels, proxies, virtual_classes, logit_mask=mask)
        return torch.autograd.grad(value, rows)[0]

    whole = row_gradient(None)
    push = -(whole - row_gradient(own_class_copies(labels, num_classes, len(blocks) + 1, loss.centers)))
    direction = F.normalize(rows.detach(), dim=1)
    own_now = F.normalize(current, dim=1)[labels]
    motion = own_now - F.normalize(blocks[0].double(), dim=1)[labels]
    return {
        "rows": len(labels),
        "push_motion_cos": _mean_cosine(_tangent(push, direction), _tangent(motion, direction)),
        "push_own_cos": _mean_cosine(_tangent(push, direction), _tangent(own_now, direction)),
        "push_share": (push.norm(dim=1) / whole.norm(dim=1).clamp_min(1e-30)).mean().item(),
    }


def own_copy_push(checkpoint: dict, max_rows: int, batch_size: int = 512) -> dict[str, float]:
    """:func:`push_statistics` of a checkpoint on up to ``max_rows`` of its run's training rows
    (the first ones, evaluation transform); ``{}`` when its memory keeps no proxy snapshots."""
    from torch.utils.data import DataLoader

    from memvir_pl.checkpoint import restore_run

    blocks = [item.proxies for item in _memory(checkpoint).recall() if item.proxies is not None]
    if not blocks:
        return {}
    _, datamodule, module = restore_run(checkpoint)
    rows, labels = [], []
    with torch.inference_mode():
        for batch in DataLoader(datamodule.split_dataset("train", train=False), batch_size=batch_size):
            rows.append(module(batch["image"]))
            labels.append(batch["label"])
            if sum(len(r) for r in rows) >= max_rows:
                break
    return push_statistics(module.loss, torch.cat(rows)[:max_rows], torch.cat(labels)[:max_rows], blocks)


def report(paths: Sequence[Path], command: str, gradient_rows: int = 0) -> str:
    """A markdown table, one row per checkpoint (with the own-class push when ``gradient_rows`` > 0)."""
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
    pushes = []
    for path in paths:
        checkpoint = load_checkpoint(path)
        stats = drift(checkpoint)
        cosines = " / ".join(f"{c:.4f}" for c in stats["own_copy_cos"])
        cosines = cosines or ("– (no proxy snapshots)" if stats["blocks"] else "– (memory empty)")
        stale = stats["stale_rows_nearest_own"]
        stale_text = "–" if math.isnan(stale) else f"{100 * stale:.1f} %"
        lines.append(f"| {path.parent.parent.name} | {path.name} | {stats['epoch']} | {stats['step']} | "
                     f"{stats['blocks']} | {cosines} | {stats['nearest_other_cos']:.4f} | {stale_text} |")
        if gradient_rows:
            pushes.append((path, own_copy_push(checkpoint, gradient_rows)))
    if pushes:
        lines += [
            "", "## The own-class old proxies' push on a training row", "",
            "push = the change the row's own-class snapshots make to its descent direction (the loss over the "
            "current and virtual proxies, with and without them in the row's logits); cosines of its tangent part "
            "with the motion of the row's proxy since the newest snapshot and with the pull towards that proxy, "
            "mean over rows; |push| / |grad|: its size against the row's whole gradient.", "",
            "| run | checkpoint | rows | push · motion | push · own proxy | abs(push) / abs(grad) |",
            "|---|---|---|---|---|---|",
        ]
        for path, push in pushes:
            if not push:
                lines.append(f"| {path.parent.parent.name} | {path.name} | – (no proxy snapshots) | | | |")
                continue
            lines.append(f"| {path.parent.parent.name} | {path.name} | {push['rows']} | {push['push_motion_cos']:+.3f} "
                         f"| {push['push_own_cos']:+.3f} | {push['push_share']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--gradients", action="store_true",
                        help="also measure the own-class old proxies' push on training rows (rebuilds each run "
                             "from its checkpoint; needs its data on this machine)")
    parser.add_argument("--rows", type=int, default=4096, help="training rows for --gradients")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.checkpoints if not p.is_file()]
    if missing:
        parser.error(f"checkpoint(s) not found: {missing}; run benchmarks/quality.py first")
    command = "python benchmarks/memvir_drift.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = report(args.checkpoints, command, args.rows if args.gradients else 0)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
