"""Transform presets against hand-computed pixel values and scipy filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from memvir_pl.data import GlyphTransform, build_transform
from memvir_pl.data.transforms import preset_input

RGB = (200, 100, 50)


def _constant(size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, RGB)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("bninception", [50 - 104, 100 - 117, 200 - 128]),  # BGR, 0-255, mean only
        (
            "imagenet",
            [(200 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (50 / 255 - 0.406) / 0.225],
        ),
        ("efficientnet", [(200 - 127) / 128, (100 - 127) / 128, (50 - 127) / 128]),
    ],
)
@pytest.mark.parametrize("train", [False, True])
def test_pixel_normalisation(preset, expected, train):
    out = build_transform(preset, train=train, image_size=16)(_constant())
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(
        out.mean(dim=(1, 2)), torch.tensor(expected, dtype=torch.float32), atol=1e-4, rtol=0
    )


def test_eval_geometry_is_resize_then_center_crop():
    pixels = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    out = build_transform("efficientnet", train=False, image_size=28)(image)
    # reference: shorter side to round(28 * 256 / 224) = 32, then the central 28 x 28
    resized = np.asarray(image.resize((48, 32), Image.BILINEAR), dtype=np.float32)
    reference = (resized[2:30, 10:38] - 127.0) / 128.0
    torch.testing.assert_close(out.permute(1, 2, 0), torch.from_numpy(reference), atol=0.05, rtol=0)


def test_glyph_eval_normalises_and_replicates_grey():
    images = torch.randint(0, 256, (5, 12, 12), dtype=torch.uint8)
    out = build_transform("glyph", train=False, image_size=12)(images)
    assert out.shape == (5, 3, 12, 12)
    reference = images.float() / 127.5 - 1.0
    for c in range(3):
        torch.testing.assert_close(out[:, c], reference)


def _blob_images() -> torch.Tensor:
    images = np.zeros((3, 16, 16), dtype=np.uint8)
    images[0, 4:12, 7:9] = 255
    images[1, 3:5, 2:14] = 180
    images[2, 6:10, 6:10] = 90
    return torch.from_numpy(images)


def _geometry_free_transform(stroke: float) -> GlyphTransform:
    """A training transform with no rotation, shear, scaling or shift, and a fixed stroke change."""
    return GlyphTransform(train=True, image_size=16, rotate_deg=0, shear_deg=0, scale=(1, 1),
                          translate=0, stroke=(stroke, stroke))


@pytest.mark.parametrize(
    ("stroke", "scipy_filter"), [(1.0, ndimage.maximum_filter), (-1.0, ndimage.minimum_filter)]
)
def test_glyph_stroke_change_is_a_max_or_min_filter(stroke, scipy_filter):
    images = _blob_images()
    still = _geometry_free_transform(stroke)
    out = (still(images)[:, 0] + 1.0) / 2.0 * 255.0
    reference = np.stack([scipy_filter(im, size=3, mode="nearest") for im in images.numpy()])
    torch.testing.assert_close(out, torch.from_numpy(reference).float(), atol=1e-3, rtol=0)


def test_glyph_identity_affine_keeps_pixels_and_random_one_is_seeded():
    images = _blob_images()
    identity = _geometry_free_transform(0.0)
    torch.testing.assert_close(identity(images), GlyphTransform(train=False, image_size=16)(images))
    augment = GlyphTransform(train=True, image_size=16)
    a = augment(images, torch.Generator().manual_seed(3))
    b = augment(images, torch.Generator().manual_seed(3))
    c = augment(images, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_glyph_resize_to_other_size():
    out = GlyphTransform(train=False, image_size=24)(_blob_images())
    assert out.shape == (3, 3, 24, 24)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown transform preset 'vgg'"):
        build_transform("vgg", train=True, image_size=224)
    assert preset_input("glyph") == "glyph" and preset_input("imagenet") == "pil"
