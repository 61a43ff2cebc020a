"""Torch datasets yielding the batch items of every DML split.

An item is a dict ``{"image": (3, H, W) float, "label": int, "index": int}`` plus
``"is_query": bool`` on query/gallery splits; ``index`` is the item's position in its split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from memvir_pl.data.glyphs import GlyphSplit
from memvir_pl.data.records import ImageList
from memvir_pl.data.sampler import batch_generator


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


class ImageFileDataset(Dataset):
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

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Items of a batch; for a :class:`SeededBatch` the PIL transforms draw from the batch's
        seed (torch's global RNG is left as it was), else from torch's global RNG."""
        generator = batch_generator(indices)
        if generator is None:
            return [self[i] for i in indices]
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(generator.get_state())
            return [self[i] for i in indices]


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
