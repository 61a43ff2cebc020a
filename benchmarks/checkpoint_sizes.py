"""Checkpoint sizes of the paper experiments, computed from tensor shapes (nothing is trained or saved).

A memvir_pl.train run writes two kinds of checkpoints (conf/callbacks/default.yaml):

- the best epoch (``epoch_NNN.ckpt``, weights only): the module's state dict (backbone, head,
  proxies, BatchNorm statistics) and the run config;
- ``last.ckpt`` (every epoch, for resuming): that, plus Adam's two moments of every trainable
  parameter and the MemVir memory: N·(M+1) slots of B embeddings (float32) and labels (int64),
  and N·(M+1) (exact mode) or N+1 (saving mode) proxy snapshots (C, D).

Metadata (config, loop counters, epoch history) adds a few kB. The model is built without its
ImageNet weights (same shapes).

    python benchmarks/checkpoint_sizes.py
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from memvir_pl.memory import VirtualClassMemory
from memvir_pl.models import EmbeddingNet


@dataclass(frozen=True)
class Setup:
    """One experiment's shapes: C classes, batch B, embedding D, MemVir N, M and proxy mode."""

    name: str
    num_classes: int
    num_steps: int
    step_gap: int
    proxy_mode: str
    batch_size: int = 128
    embedding_dim: int = 512
    backbone: str = "bninception"


SETUPS = (
    Setup("cars", num_classes=98, num_steps=45, step_gap=10, proxy_mode="exact"),
    Setup("sop", num_classes=11_318, num_steps=5, step_gap=100, proxy_mode="saving"),
)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def checkpoint_bytes(model: nn.Module, setup: Setup) -> dict[str, int]:
    """Bytes of each part: ``weights`` (model + proxies), ``optimizer`` (Adam), ``memory``; ``best`` and ``last``."""
    proxies = torch.empty(setup.num_classes, setup.embedding_dim)
    weights = tensor_bytes(model.state_dict().values()) + tensor_bytes([proxies])
    trainable = tensor_bytes(p for p in model.parameters() if p.requires_grad) + tensor_bytes([proxies])
    optimizer = 2 * trainable  # exp_avg and exp_avg_sq, float32 like the parameters
    memory = VirtualClassMemory.bank_bytes(setup.num_steps, setup.step_gap, setup.batch_size,
                                           setup.embedding_dim, setup.num_classes, setup.proxy_mode)
    return {"weights": weights, "optimizer": optimizer, "memory": memory,
            "best": weights, "last": weights + optimizer + memory}


def report(setups: tuple[Setup, ...] = SETUPS) -> str:
    """A Markdown table of the sizes in MB (10^6 bytes)."""
    lines = ["| experiment | C | N, M, mode | weights | Adam state | memory | best ckpt | last.ckpt |",
             "|---|---|---|---|---|---|---|---|"]
    for setup in setups:
        model = EmbeddingNet(setup.backbone, embedding_dim=setup.embedding_dim, pretrained=False)
        size = {k: f"{v / 1e6:,.1f} MB" for k, v in checkpoint_bytes(model, setup).items()}
        lines.append(f"| {setup.name} | {setup.num_classes:,} | {setup.num_steps}, {setup.step_gap}, "
                     f"{setup.proxy_mode} | {size['weights']} | {size['optimizer']} | {size['memory']} | "
                     f"{size['best']} | {size['last']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    table = report()
    print(table)
    return table


if __name__ == "__main__":
    main()
