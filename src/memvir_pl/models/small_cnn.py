"""A small CNN for the embedded 32 x 32 glyph data set: fast on CPU, no pretrained weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Blocks of conv 3x3 -> BatchNorm -> ReLU, with a 2x2 max-pool between blocks.

    ``forward``: ``(B, in_channels, H, W)`` -> ``(B, widths[-1], H / 2**(n-1), W / 2**(n-1))``
    (``(B, 256, 4, 4)`` for ``32 x 32`` input with the default four blocks).
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        if not widths:
            raise ValueError("SmallCNN needs at least one block width, e.g. (32, 64, 128, 256)")
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> feature map ``(B, out_channels, h, w)``."""
        return self.features(x)
