"""Gathering a batch across processes with gradients, for losses that see the global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _gather_rows(x: Tensor) -> tuple[Tensor, list[int]]:
    """All-gather ``x`` (B_r, ...) from every rank, allowing different B_r; rank order."""
    n = world_size()
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    row_counts = [int(s.item()) for s in sizes]
    longest = max(row_counts)
    padded = x
    if x.shape[0] < longest:
        padded = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, row_counts, strict=True)]), row_counts


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the incoming gradients over ranks and keeps this rank's rows.

    Every rank then holds the gradient of the sum of all ranks' losses with
    respect to its own rows; DDP's gradient averaging turns that into the
    gradient of the mean loss, the same as one process on the global batch.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        gathered, row_counts = _gather_rows(x)
        rank = dist.get_rank()
        ctx.start = sum(row_counts[:rank])
        ctx.stop = ctx.start + row_counts[rank]
        return gathered

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop]


def gather_batch(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate every rank's batch in rank order; identity outside DDP.

    Args:
        embeddings: (B_r, D) this rank's rows; gradients flow back to them.
        labels: (B_r,) integer labels.

    Returns:
        embeddings (sum B_r, D) and labels (sum B_r,), the same on every rank.
    """
    if world_size() == 1:
        return embeddings, labels
    gathered_labels, _ = _gather_rows(labels)
    return _GatherWithGrad.apply(embeddings), gathered_labels
