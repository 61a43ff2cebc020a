"""Image transform presets.

PIL presets (PIL image -> (3, S, S) float tensor), all with the same geometry: train
RandomResizedCrop(S) + horizontal flip (``hflip=False`` leaves the flip out, for data whose
classes have a direction, e.g. emoji arrows), eval Resize(S·256/224) + CenterCrop(S); they
differ in the pixel normalisation, given in 0-255 units:

- ``bninception``: BGR, mean [104, 117, 128] (B, G, R), std 1 (the official MemVir input).
- ``imagenet``: RGB, ImageNet mean/std (torchvision ResNet-50).
- ``efficientnet``: RGB, (x - 127) / 128 (EfficientNet-Lite0's TF weights).

``glyph`` (uint8 glyph batches (B, S, S) -> (B, 3, S, S) float): random affine (rotation,
shear, scale, translation) and stroke-thickness change (a blend with a 3x3 max/min filter) in
training, on whole batches at once; grey replicated to 3 channels, mean 0.5, std 0.5.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision import transforms as T


@dataclass(frozen=True)
class PixelNorm:
    """Per-channel normalisation in 0-255 units, in the network's channel order."""

    bgr: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) RGB in [0, 1] -> normalised (3, H, W)."""
        image = image.flip(0) if self.bgr else image
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (image * 255.0 - mean) / std


PIXEL_NORMS: dict[str, PixelNorm] = {
    "bninception": PixelNorm(bgr=True, mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0)),
    "imagenet": PixelNorm(bgr=False, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)),
    "efficientnet": PixelNorm(bgr=False, mean=(127.0,) * 3, std=(128.0,) * 3),
}


def pil_transform(
    norm: PixelNorm, train: bool, image_size: int = 224, hflip: bool = True
) -> Callable:
    """PIL image -> (3, S, S) float tensor: crop geometry (and flip when ``hflip``), then ``norm``."""
    if train:
        geometry = [T.RandomResizedCrop(image_size), *([T.RandomHorizontalFlip()] if hflip else [])]
    else:
        geometry = [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]
    return T.Compose([*geometry, T.ToTensor(), norm])


@dataclass(frozen=True)
class GlyphTransform:
    """Batched glyph preprocessing: (B, S0, S0) uint8 -> (B, 3, S, S) float, mean 0.5, std 0.5.

    Images are resized (bilinear) to ``image_size`` S when rendered at another size S0.

    In training each image gets its own random affine map (rotation and shear in degrees,
    isotropic scale, translation as a fraction of the side) and stroke change ``s`` drawn from
    ``stroke``: s > 0 blends towards a 3x3 max filter (bolder), s < 0 towards a min filter
    (thinner). Randomness comes from ``generator`` or torch's global RNG.
    """

    train: bool
    image_size: int = 32
    rotate_deg: float = 8.0
    shear_deg: float = 8.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.08
    stroke: tuple[float, float] = (-0.5, 0.8)

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = images.unsqueeze(1).float() / 255.0
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
        if self.train:
            x = self._affine(self._thickness(x, generator), generator)
        return ((x - 0.5) / 0.5).expand(-1, 3, -1, -1)

    @staticmethod
    def _uniform(n: int, low: float, high: float, generator: torch.Generator | None):
        return low + (high - low) * torch.rand(n, generator=generator)

    def _thickness(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        s = self._uniform(len(x), *self.stroke, generator).view(-1, 1, 1, 1)
        bold = F.max_pool2d(x, 3, stride=1, padding=1)
        thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
        return x + s.clamp(min=0) * (bold - x) + (-s).clamp(min=0) * (thin - x)

    def _affine(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n = len(x)
        angle = torch.deg2rad(self._uniform(n, -self.rotate_deg, self.rotate_deg, generator))
        shear = torch.tan(
            torch.deg2rad(self._uniform(n, -self.shear_deg, self.shear_deg, generator))
        )
        scale = self._uniform(n, *self.scale, generator)
        shift = self._uniform(2 * n, -2 * self.translate, 2 * self.translate, generator)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos, -sin + shear * cos, shift[:n]], dim=1),
                torch.stack([sin, cos + shear * sin, shift[n:]], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def glyph_transform(train: bool, image_size: int = 32) -> GlyphTransform:
    """The ``glyph`` preset at the default augmentation strength."""
    return GlyphTransform(train=train, image_size=image_size)


def build_transform(preset: str, train: bool, image_size: int, hflip: bool = True) -> Callable:
    """The transform of ``preset`` (a PIXEL_NORMS name or ``glyph``) for train or evaluation;
    ``hflip=False`` drops the PIL presets' random horizontal flip."""
    if preset_input(preset) == "glyph":
        return glyph_transform(train, image_size)
    return pil_transform(PIXEL_NORMS[preset], train, image_size, hflip)


def preset_input(preset: str) -> str:
    """What a preset consumes: ``"pil"`` (PIL images) or ``"glyph"`` (uint8 glyph batches)."""
    if preset != "glyph" and preset not in PIXEL_NORMS:
        raise ValueError(
            f"unknown transform preset {preset!r}; expected one of {[*PIXEL_NORMS, 'glyph']}"
        )
    return "glyph" if preset == "glyph" else "pil"


def input_settings(dataset: str, preset: str | None = None, image_size: int | None = None) -> tuple[str, int]:
    """The transform preset and input side (pixels) of a data set, defaults filled in and checked.

    Defaults: ``glyph`` at 32 px for the rendered ``glyphs``, ``bninception`` at 224 px otherwise.
    A preset that does not fit the data set (``glyph`` for image files, a PIL preset for glyphs)
    is refused.
    """
    glyphs = dataset == "glyphs"
    preset = preset or ("glyph" if glyphs else "bninception")
    if (preset_input(preset) == "glyph") != glyphs:
        raise ValueError(
            f"transform preset {preset!r} does not fit dataset {dataset!r}: "
            "glyphs need 'glyph', emoji and image files a PIL preset ('bninception', "
            "'imagenet', 'efficientnet')"
        )
    return preset, image_size or (32 if glyphs else 224)
