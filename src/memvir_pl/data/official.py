"""The file-based DML datasets in their official layouts, with class-disjoint splits.

Every loader takes the dataset's root folder and returns ``{"train": ImageList, "test":
ImageList}``; labels are contiguous per split. Only the annotation files are read here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memvir_pl.data.records import ImageList, make_image_list, require_files

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class FileDataset:
    """How to find and read one dataset."""

    layout: str
    url: str
    required: tuple[str, ...]
    read: Callable[[Path], dict[str, ImageList]]

    def load(self, root: str | Path, name: str) -> dict[str, ImageList]:
        """The dataset's splits; FileNotFoundError (naming what is expected) if files are missing."""
        root = Path(root)
        require_files(root, self.required, name, self.layout, self.url)
        return self.read(root)


def _rows(path: Path, skip: int = 0) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f.read().splitlines()[skip:] if line.strip()]


def _by_class_range(
    paths: list[Path], classes: np.ndarray, last_train_class: int
) -> dict[str, ImageList]:
    """Classes 1..last_train_class train, the rest test (the DML convention)."""
    splits = {"train": classes <= last_train_class, "test": classes > last_train_class}
    return {
        name: make_image_list([p for p, k in zip(paths, keep, strict=True) if k], classes[keep])
        for name, keep in splits.items()
    }


def _read_cub(root: Path) -> dict[str, ImageList]:
    paths = {row[0]: root / "images" / row[1] for row in _rows(root / "images.txt")}
    labels = {row[0]: int(row[1]) for row in _rows(root / "image_class_labels.txt")}
    if paths.keys() != labels.keys():
        raise ValueError(f"CUB: images.txt and image_class_labels.txt list different ids in {root}")
    ids = list(paths)
    return _by_class_range([paths[i] for i in ids], np.array([labels[i] for i in ids]), 100)


def _read_cars(root: Path) -> dict[str, ImageList]:
    from scipy.io import loadmat

    annotations = loadmat(root / "cars_annos.mat")["annotations"].reshape(-1)
    paths = [root / str(np.asarray(a["relative_im_path"]).reshape(-1)[0]) for a in annotations]
    classes = np.array([int(np.asarray(a["class"]).reshape(-1)[0]) for a in annotations])
    return _by_class_range(paths, classes, 98)


def _read_sop(root: Path) -> dict[str, ImageList]:
    splits = {}
    for name, file in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        rows = _rows(root / file, skip=1)
        splits[name] = make_image_list([root / r[3] for r in rows], [int(r[1]) for r in rows])
    return splits


def _read_inshop(root: Path) -> dict[str, ImageList]:
    rows = _rows(root / "list_eval_partition.txt", skip=2)
    by_status: dict[str, list[list[str]]] = {"train": [], "query": [], "gallery": []}
    for row in rows:
        if len(row) != 3 or row[2] not in by_status:
            raise ValueError(
                f"In-Shop: bad line {' '.join(row)!r} in {root / 'list_eval_partition.txt'}; "
                "expected 'image_name item_id train|query|gallery'"
            )
        by_status[row[2]].append(row)
    test = by_status["query"] + by_status["gallery"]
    return {
        "train": make_image_list(
            [root / r[0] for r in by_status["train"]], [r[1] for r in by_status["train"]]
        ),
        "test": make_image_list(
            [root / r[0] for r in test],
            [r[1] for r in test],
            is_query=[r[2] == "query" for r in test],
        ),
    }


def _read_folder(root: Path) -> dict[str, ImageList]:
    splits = {}
    for name in ("train", "test"):
        items = sorted(
            (path.parent.name, path)
            for path in (root / name).glob("*/*")
            if path.suffix.lower() in IMAGE_SUFFIXES
        )
        if not items:
            raise FileNotFoundError(
                f"folder: no images in {root / name}/<class>/ (suffixes {sorted(IMAGE_SUFFIXES)})"
            )
        splits[name] = make_image_list([p for _, p in items], [c for c, _ in items])
    return splits


DATASETS: dict[str, FileDataset] = {
    "cub": FileDataset(
        layout="CUB_200_2011/{images.txt, image_class_labels.txt, images/<class>/<file>.jpg}",
        url="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        required=("images.txt", "image_class_labels.txt", "images"),
        read=_read_cub,
    ),
    "cars": FileDataset(
        layout="{cars_annos.mat, car_ims/000001.jpg ...}",
        url="https://ai.stanford.edu/~jkrause/cars/car_dataset.html (cars_annos.mat, car_ims.tgz)",
        required=("cars_annos.mat", "car_ims"),
        read=_read_cars,
    ),
    "sop": FileDataset(
        layout="Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super_class>_final/}",
        url="https://cvgl.stanford.edu/projects/lifted_struct/",
        required=("Ebay_train.txt", "Ebay_test.txt"),
        read=_read_sop,
    ),
    "inshop": FileDataset(
        layout="{list_eval_partition.txt, img/<gender>/<category>/<item_id>/<file>.jpg}",
        url="https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html",
        required=("list_eval_partition.txt", "img"),
        read=_read_inshop,
    ),
    "folder": FileDataset(
        layout="{train/<class>/<image>, test/<class>/<image>} (the official MemVir layout)",
        url="your own data (no download)",
        required=("train", "test"),
        read=_read_folder,
    ),
}


def load_file_dataset(name: str, root: str | Path) -> dict[str, ImageList]:
    """``{"train", "test"}`` image lists of dataset ``name`` (one of :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {[*DATASETS, 'glyphs']}")
    return DATASETS[name].load(root, name)
