"""BN-Inception (Inception with Batch Normalization; Ioffe & Szegedy, 2015).

Module and parameter names follow the Caffe-converted model of Cadene's
``pretrainedmodels`` (``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``inception_3a_1x1``, ...), so
its ImageNet checkpoint ``bn_inception-52deb4733.pth`` loads with strict key matching.

Input convention of those weights: **BGR** channel order, values in **0-255**, mean
``[104, 117, 128]`` subtracted, std 1 (done by the data transforms, not here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BNINCEPTION_URL = "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth"


@dataclass(frozen=True)
class _Inception:
    """Channel widths of one inception module (0 = branch absent).

    ``reduce=True`` marks the grid-reduction modules (3c, 4e): their 3x3 branches use stride 2
    and their pooling branch is a stride-2 max-pool without projection.
    """

    name: str
    in_channels: int
    c1x1: int
    c3x3_reduce: int
    c3x3: int
    double_reduce: int
    double: int
    pool: str  # "avg" or "max"
    pool_proj: int
    reduce: bool = False

    @property
    def out_channels(self) -> int:
        pool_out = self.in_channels if self.reduce else self.pool_proj
        return self.c1x1 + self.c3x3 + self.double + pool_out


_MODULES = (
    _Inception("3a", 192, 64, 64, 64, 64, 96, "avg", 32),
    _Inception("3b", 256, 64, 64, 96, 64, 96, "avg", 64),
    _Inception("3c", 320, 0, 128, 160, 64, 96, "max", 0, reduce=True),
    _Inception("4a", 576, 224, 64, 96, 96, 128, "avg", 128),
    _Inception("4b", 576, 192, 96, 128, 96, 128, "avg", 128),
    _Inception("4c", 576, 160, 128, 160, 128, 160, "avg", 128),
    _Inception("4d", 608, 96, 128, 192, 160, 192, "avg", 128),
    _Inception("4e", 608, 0, 128, 192, 192, 256, "max", 0, reduce=True),
    _Inception("5a", 1056, 352, 192, 320, 160, 224, "avg", 128),
    _Inception("5b", 1024, 352, 192, 320, 192, 224, "max", 128),
)


class BNInception(nn.Module):
    """BN-Inception feature extractor with an optional ImageNet classifier.

    ``forward``: images ``(B, in_channels, H, W)`` -> feature map ``(B, 1024, H', W')``
    (``7 x 7`` for ``224 x 224`` input). ``logits``: feature map -> ``(B, num_classes)``
    through global average pooling and ``last_linear`` (present only when ``num_classes``).

    Every convolution is followed by its BatchNorm (``<conv>_bn``) and a ReLU.
    """

    out_channels = 1024

    def __init__(self, num_classes: int | None = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self._stem: list[tuple[str, ...]] = []
        self._add_conv("conv1_7x7_s2", in_channels, 64, 7, stride=2)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._add_conv("conv2_3x3_reduce", 64, 64, 1)
        self._add_conv("conv2_3x3", 64, 192, 3)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._branches: list[tuple[list[list[str]], str, str | None]] = []
        for spec in _MODULES:
            self._add_inception(spec)
        self.last_linear = nn.Linear(self.out_channels, num_classes) if num_classes else None

    def _add_conv(self, name: str, cin: int, cout: int, kernel: int, stride: int = 1) -> str:
        self.add_module(name, nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2))
        self.add_module(f"{name}_bn", nn.BatchNorm2d(cout))
        return name

    def _add_inception(self, s: _Inception) -> None:
        prefix, stride = f"inception_{s.name}", 2 if s.reduce else 1
        chains: list[list[str]] = []
        if s.c1x1:
            chains.append([self._add_conv(f"{prefix}_1x1", s.in_channels, s.c1x1, 1)])
        chains.append([
            self._add_conv(f"{prefix}_3x3_reduce", s.in_channels, s.c3x3_reduce, 1),
            self._add_conv(f"{prefix}_3x3", s.c3x3_reduce, s.c3x3, 3, stride),
        ])
        chains.append([
            self._add_conv(f"{prefix}_double_3x3_reduce", s.in_channels, s.double_reduce, 1),
            self._add_conv(f"{prefix}_double_3x3_1", s.double_reduce, s.double, 3),
            self._add_conv(f"{prefix}_double_3x3_2", s.double, s.double, 3, stride),
        ])
        if s.reduce:
            pool: nn.Module = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        elif s.pool == "max":
            pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        else:
            pool = nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
        self.add_module(f"{prefix}_pool", pool)
        proj = None
        if s.pool_proj:
            proj = self._add_conv(f"{prefix}_pool_proj", s.in_channels, s.pool_proj, 1)
        self._branches.append((chains, f"{prefix}_pool", proj))

    def _conv_bn_relu(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)), inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` (BGR, 0-255, mean-subtracted) -> features ``(B, 1024, h, w)``."""
        x = self._conv_bn_relu("conv1_7x7_s2", x)
        x = self.pool1_3x3_s2(x)
        x = self._conv_bn_relu("conv2_3x3_reduce", x)
        x = self._conv_bn_relu("conv2_3x3", x)
        x = self.pool2_3x3_s2(x)
        for chains, pool, proj in self._branches:
            outs = []
            for chain in chains:
                y = x
                for name in chain:
                    y = self._conv_bn_relu(name, y)
                outs.append(y)
            y = getattr(self, pool)(x)
            outs.append(self._conv_bn_relu(proj, y) if proj else y)
            x = torch.cat(outs, dim=1)
        return x

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Feature map ``(B, 1024, h, w)`` -> ImageNet logits ``(B, num_classes)``."""
        if self.last_linear is None:
            raise RuntimeError("this BNInception was built without a classifier (num_classes=None)")
        return self.last_linear(features.mean(dim=(2, 3)))
