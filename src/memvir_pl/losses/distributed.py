"""Gathering a batch across processes with gradients, for losses that see the global batch.

``torch.distributed.nn.functional.all_gather`` would do it for batches of one shape on every
rank; here the ranks may hold different row counts (their last batches differ when
``data.drop_last=false``), so the rows are padded to the longest, gathered and cut back.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _row_counts(x: Tensor) -> list[int]:
    """Every rank's ``x.shape[0]``, rank order: one all-gather and one host read (the step's only sync)."""
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return torch.cat(sizes).tolist()


def _gather_rows(x: Tensor, row_counts: list[int]) -> Tensor:
    """All-gather ``x`` (B_r, ...) from every rank, whose row counts are ``row_counts``; rank order."""
    longest = max(row_counts)
    padded = x
    if x.shape[0] < longest:
        padded = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in row_counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, row_counts, strict=True)])


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the incoming gradients over ranks and keeps this rank's rows.

    Every rank then holds the gradient of the sum of all ranks' losses with
    respect to its own rows; DDP's gradient averaging turns that into the
    gradient of the mean loss, the same as one process on the global batch.
    """

    @staticmethod
    def forward(ctx, x: Tensor, row_counts: list[int]) -> Tensor:  # type: ignore[override]
        rank = dist.get_rank()
        ctx.start = sum(row_counts[:rank])
        ctx.stop = ctx.start + row_counts[rank]
        return _gather_rows(x, row_counts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop], None


def gather_batch(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate every rank's batch in rank order; identity outside DDP.

    The ranks' batch sizes are exchanged once per call (one host sync) and
    shared by both gathers.

    Args:
        embeddings: (B_r, D) this rank's rows; gradients flow back to them.
        labels: (B_r,) integer labels.

    Returns:
        embeddings (sum B_r, D) and labels (sum B_r,), the same on every rank.
    """
    if world_size() == 1:
        return embeddings, labels
    row_counts = _row_counts(labels)
    return _GatherWithGrad.apply(embeddings, row_counts), _gather_rows(labels, row_counts)
