"""Rasterise emoji images to (S, S, 3) uint8 RGB on white.

SVGs are rendered by resvg (the ``resvg-py`` binding: a self-contained wheel, no system
library, and resvg renders the gradients, masks and filters of these sets, e.g. Fluent's, by the
SVG spec); PNGs are decoded by PIL. Both are composited on white at S x S pixels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
import resvg_py
from PIL import Image

WHITE = "#ffffff"


def _rgb_on_white(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) uint8: ``image`` over white, resized (Lanczos) when it is not size x size."""
    rgba = image.convert("RGBA")
    if rgba.size != (size, size):
        rgba = rgba.resize((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", rgba.size, WHITE)
    return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))


def png_to_array(data: bytes, size: int) -> np.ndarray:
    """A PNG file's bytes -> (size, size, 3) uint8 on white."""
    with Image.open(io.BytesIO(data)) as image:
        return _rgb_on_white(image, size)


def svg_to_array(svg: str, size: int) -> np.ndarray:
    """An SVG document -> (size, size, 3) uint8 on white, its viewBox scaled to fit and centred
    (the document's own ``preserveAspectRatio``)."""
    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, skip_system_fonts=True)
    return png_to_array(bytes(png), size)


def iconify_svg(icon: Mapping, default_width: float, default_height: float) -> str:
    """An SVG document of one icons.json entry (``body`` with optional ``left``, ``top``,
    ``width``, ``height``), in a square viewBox centred on the icon's box."""
    left, top = float(icon.get("left", 0)), float(icon.get("top", 0))
    width = float(icon.get("width", default_width))
    height = float(icon.get("height", default_height))
    side = max(width, height)
    x, y = left - (side - width) / 2, top - (side - height) / 2
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'viewBox="{x:g} {y:g} {side:g} {side:g}">{icon["body"]}</svg>'
    )
