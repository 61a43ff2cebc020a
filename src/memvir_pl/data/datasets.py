"""Torch datasets yielding the batch items of every DML split.

An item is a dict ``{"image": (3, H, W) float, "label": int, "index": int}`` plus
``"is_query": bool`` on query/gallery splits; ``index`` is the item's position in its split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from memvir_pl.data.sampler import batch_generator

if TYPE_CHECKING:  # the splits build these datasets, so they import this module
    from memvir_pl.data.glyphs import GlyphSplit
    from memvir_pl.data.records import ImageList


class UnreadableImageError(OSError):
    """An image file that is missing, truncated or not an image."""


def read_rgb(path: str) -> Image.Image:
    """The image at ``path`` as RGB; UnreadableImageError naming the file otherwise."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(
            f"cannot read image {path}: {error}. Re-extract the dataset or remove the file "
            "from the annotation list."
        ) from error


class SeededPILBatches(Dataset):
    """A dataset of PIL-transformed items whose batches draw their augmentation from the batch's seed."""

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Items of a batch; for a :class:`SeededBatch` the PIL transforms draw from the batch's
        seed (torch's global RNG is left as it was), else from torch's global RNG."""
        generator = batch_generator(indices)
        if generator is None:
            return [self[i] for i in indices]
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(generator.get_state())
            return [self[i] for i in indices]


class ImageFileDataset(SeededPILBatches):
    """Images read from disk with PIL and a PIL transform preset."""

    def __init__(self, images: ImageList, transform: Callable[[Image.Image], torch.Tensor]):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {
            "image": self.transform(read_rgb(self.images.paths[index])),
            "label": int(self.images.labels[index]),
            "index": index,
        }
        if self.images.is_query is not None:
            item["is_query"] = bool(self.images.is_query[index])
        return item


class ArrayImageDataset(SeededPILBatches):
    """In-memory RGB images (e.g. the rendered emoji) through a PIL transform preset.

    Args:
        images: (N, H, W, 3) uint8 RGB.
        labels: (N,) int64 in [0, C).
        transform: PIL image -> (3, S, S) float tensor.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
            raise ValueError(
                f"expected (N, H, W, 3) images and (N,) labels, got {images.shape} and "
                f"{np.shape(labels)}"
            )
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.transform(Image.fromarray(self.images[index])),
            "label": int(self.labels[index]),
            "index": index,
        }


class GlyphDataset(Dataset):
    """In-memory glyph images; ``__getitems__`` transforms a whole batch in one tensor op."""

    def __init__(self, glyphs: GlyphSplit, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.images = torch.from_numpy(glyphs.images)
        self.labels = torch.from_numpy(glyphs.labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Items of a batch (the DataLoader collates them), transformed together; the random
        augmentation is drawn from the batch's seed (a :class:`SeededBatch`), else from torch's
        global RNG."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        images = self.transform(self.images[index], generator=batch_generator(indices))
        return [
            {"image": image, "label": label, "index": i}
            for image, label, i in zip(images, self.labels[index], index, strict=True)
        ]
