"""What every split answers (:class:`Split`), and the image lists of the file-based datasets:
labels, class-disjoint hold-out, missing-file errors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch.utils.data import Dataset

from memvir_pl.data.datasets import ImageFileDataset
from memvir_pl.data.features import array_digest

#: The image files the file-based loaders and ``search`` read (suffixes compared lower-case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class Split(Protocol):
    """One split of any data set: :class:`ImageList` (image files), ``GlyphSplit`` and
    ``EmojiSplit`` (rendered in memory).

    Attributes:
        labels: (N,) int64 in [0, C).
        is_query: (N,) bool on query/gallery splits, else ``None`` (every item queries all others).
    """

    labels: np.ndarray

    @property
    def is_query(self) -> np.ndarray | None: ...

    @property
    def num_classes(self) -> int:
        """C."""
        ...

    def dataset(self, transform: Callable[[Any], Any]) -> Dataset:
        """The split's items (see :mod:`memvir_pl.data.datasets`) through ``transform`` (a preset
        of :func:`memvir_pl.data.transforms.build_transform`)."""
        ...

    def content_digest(self, root: str | None) -> str:
        """A digest of what the split holds (pixels, or files relative to ``root``): equal digests,
        equal images."""
        ...

    def item_rows(self) -> list[dict[str, Any]]:
        """What each item is, in split order: ``index``, ``label`` and the split's own columns."""
        ...


@dataclass(frozen=True)
class ImageList:
    """The images of one split.

    Attributes:
        paths: (N,) image file paths.
        labels: (N,) int64 in [0, C), classes in sorted order of their original ids.
        classes: (C,) original class ids (as strings) of labels 0..C-1.
        is_query: (N,) bool for query/gallery splits (In-Shop), else ``None`` (all vs all).
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    is_query: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, keep: np.ndarray) -> ImageList:
        """The images where the (N,) bool mask ``keep`` holds, labels made contiguous again."""
        paths = [p for p, k in zip(self.paths, keep, strict=True) if k]
        classes = [self.classes[label] for label in self.labels[keep]]
        is_query = None if self.is_query is None else self.is_query[keep]
        return make_image_list(paths, classes, is_query)

    def dataset(self, transform: Callable[[Any], Any]) -> Dataset:
        return ImageFileDataset(self, transform)

    def content_digest(self, root: str | None) -> str:
        """The files' paths (relative to ``root``, so a moved data folder keeps its digest), sizes,
        labels and query flags."""
        paths = [os.path.relpath(p, root) if root else p for p in self.paths]
        return array_digest(paths, self.labels, self.is_query, [Path(p).stat().st_size for p in self.paths])

    def item_rows(self) -> list[dict[str, Any]]:
        """``index``, ``label``, ``class`` (the original id), ``path`` and, on query/gallery splits, ``is_query``."""
        rows = [
            {"index": i, "label": int(label), "class": self.classes[int(label)], "path": path}
            for i, (label, path) in enumerate(zip(self.labels, self.paths, strict=True))
        ]
        if self.is_query is not None:
            for row, is_query in zip(rows, self.is_query, strict=True):
                row["is_query"] = bool(is_query)
        return rows


def make_image_list(
    paths: Sequence[str | Path],
    class_ids: Sequence[Hashable],
    is_query: Sequence[bool] | np.ndarray | None = None,
) -> ImageList:
    """An :class:`ImageList` whose labels number the sorted distinct ``class_ids`` 0..C-1."""
    if len(paths) != len(class_ids):
        raise ValueError(f"{len(paths)} paths but {len(class_ids)} class ids")
    classes, labels = np.unique(np.asarray(class_ids), return_inverse=True)
    return ImageList(
        paths=tuple(str(p) for p in paths),
        labels=labels.astype(np.int64).reshape(-1),
        classes=tuple(str(c) for c in classes),
        is_query=None if is_query is None else np.asarray(is_query, dtype=bool),
    )


def hold_out_classes(images: ImageList, fraction: float) -> tuple[ImageList, ImageList]:
    """Split ``images`` into (kept, held-out) with disjoint classes.

    The held-out classes are the round(fraction * C) classes with the smallest SHA-1 of their
    original id: the choice is stable (it depends on nothing but the class ids).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    count = round(fraction * images.num_classes)
    if not 0 < count < images.num_classes:
        raise ValueError(
            f"val_fraction={fraction} of {images.num_classes} training classes holds out "
            f"{count}; both sides need at least one class"
        )
    order = sorted(
        range(images.num_classes),
        key=lambda c: hashlib.sha1(images.classes[c].encode("utf-8")).hexdigest(),
    )
    held = np.isin(images.labels, order[:count])
    return images.subset(~held), images.subset(held)


def require_files(root: Path, names: Sequence[str], dataset: str, layout: str, url: str) -> None:
    """Raise FileNotFoundError naming every missing entry of ``names`` under ``root``."""
    missing = [name for name in names if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: missing {missing} under {root}. Expected layout: {layout}. "
            f"Download it from {url} and set data.root=PATH to the folder that holds it."
        )
