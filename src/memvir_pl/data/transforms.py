"""Image transform presets.

- ``bninception``: train RandomResizedCrop + horizontal flip, eval Resize(S·256/224) +
  CenterCrop(S); BGR channel order, pixel values 0-255, mean [104, 117, 128] (B, G, R), std 1.
- ``imagenet``: the same geometry, RGB in [0, 1] normalised with the ImageNet mean/std.
- ``glyph``: for in-memory glyph images (uint8 ink on black); works on whole batches at once:
  random affine (rotation, shear, scale, translation) and stroke-thickness change (a blend
  with a 3x3 max/min filter) in training; grey replicated to 3 channels, mean 0.5, std 0.5.

``bninception`` and ``imagenet`` take a PIL image and give a (3, S, S) float tensor;
``glyph`` takes (B, S, S) uint8 and gives (B, 3, S, S) float.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BNINCEPTION_MEAN_BGR = (104.0, 117.0, 128.0)


def _to_bgr255(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> BGR in [0, 255]."""
    return image.flip(0) * 255.0


def _pil_geometry(train: bool, image_size: int) -> list[Callable]:
    if train:
        return [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    return [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size)]


def bninception_transform(train: bool, image_size: int = 224) -> Callable:
    """PIL image -> (3, S, S) float tensor, BN-Inception preprocessing (BGR, 0-255)."""
    return T.Compose(
        [
            *_pil_geometry(train, image_size),
            T.ToTensor(),
            _to_bgr255,
            T.Normalize(BNINCEPTION_MEAN_BGR, (1.0, 1.0, 1.0)),
        ]
    )


def imagenet_transform(train: bool, image_size: int = 224) -> Callable:
    """PIL image -> (3, S, S) float tensor, ImageNet mean/std (ResNet-50, EfficientNet-Lite0)."""
    return T.Compose(
        [*_pil_geometry(train, image_size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


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


#: preset name -> (input kind, builder(train, image_size)).
PRESETS: dict[str, tuple[str, Callable[[bool, int], Callable]]] = {
    "bninception": ("pil", bninception_transform),
    "imagenet": ("pil", imagenet_transform),
    "glyph": ("glyph", glyph_transform),
}


def _preset(name: str) -> tuple[str, Callable[[bool, int], Callable]]:
    if name not in PRESETS:
        raise ValueError(f"unknown transform preset {name!r}; expected one of {list(PRESETS)}")
    return PRESETS[name]


def build_transform(preset: str, train: bool, image_size: int) -> Callable:
    """The transform of ``preset`` for the train or the evaluation splits."""
    return _preset(preset)[1](train, image_size)


def preset_input(preset: str) -> str:
    """What a preset consumes: ``"pil"`` (PIL images) or ``"glyph"`` (uint8 glyph batches)."""
    return _preset(preset)[0]
