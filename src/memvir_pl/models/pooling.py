"""Global pooling of a feature map ``(B, C, H, W)`` into a vector ``(B, C)``."""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("gap", "gmp", "gap+gmp")


class GlobalPool(nn.Module):
    """``gap``: mean over H, W; ``gmp``: max over H, W; ``gap+gmp``: their sum (as Proxy-Anchor)."""

    def __init__(self, mode: str = "gap") -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"unknown pooling {mode!r}; expected one of {POOLINGS} "
                             "(set model.pooling=gap, gmp or gap+gmp)")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``(B, C, H, W)`` -> pooled features ``(B, C)``."""
        if self.mode == "gap":
            return x.mean(dim=(2, 3))
        if self.mode == "gmp":
            return x.amax(dim=(2, 3))
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
