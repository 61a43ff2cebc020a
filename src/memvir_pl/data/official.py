"""The file-based DML datasets in their official layouts, with class-disjoint splits.

Every loader takes the dataset's root folder and returns ``{"train": ImageList, "test":
ImageList}``; labels are contiguous per split. Only the annotation files are read here.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memvir_pl.data.records import IMAGE_SUFFIXES, ImageList, make_image_list, require_files


@dataclass(frozen=True)
class Layout:
    """One way a dataset's folder can be laid out: the entries it needs and how to read it."""

    description: str
    required: tuple[str, ...]
    read: Callable[[Path], dict[str, ImageList]]

    def matches(self, root: Path) -> bool:
        return all((root / name).exists() for name in self.required)


@dataclass(frozen=True)
class FileDataset:
    """How to find and read one dataset.

    Attributes:
        layouts: the accepted folder layouts (the first that matches is read).
        url: where to get it.
        images: the official release's image count (all splits), ``None`` = no fixed count.
    """

    layouts: tuple[Layout, ...]
    url: str
    images: int | None = None

    @property
    def layout(self) -> str:
        """The accepted layouts in words."""
        return " or ".join(layout.description for layout in self.layouts)

    def find_layout(self, root: str | Path) -> Layout | None:
        """The first layout ``root`` holds, or ``None``."""
        root = Path(root)
        return next((layout for layout in self.layouts if root.is_dir() and layout.matches(root)), None)

    def load(self, root: str | Path, name: str) -> dict[str, ImageList]:
        """The dataset's splits. FileNotFoundError naming what is expected when ``root`` holds no
        layout (with the subfolder that does, when ``root`` is one level too high); a warning when
        the image count differs from the official release's."""
        root = Path(root)
        layout = self.find_layout(root)
        if layout is None:
            below = [child for child in sorted(root.iterdir()) if child.is_dir() and self.find_layout(child)] \
                if root.is_dir() else []
            if below:
                raise FileNotFoundError(f"{name}: {root} does not hold the dataset's files, but {below[0]} does: "
                                        f"did you mean data.root={below[0]}?")
            require_files(root, self.layouts[0].required, name, self.layout, self.url)
            raise FileNotFoundError(f"{name}: {root} holds none of the layouts {self.layout}; get it from {self.url}")
        splits = layout.read(root)
        found = sum(len(split.paths) for split in splits.values())
        if self.images is not None and found != self.images:
            warnings.warn(f"{name}: {found:,} images listed under {root}, the official release has {self.images:,}; "
                          "results are not comparable with published ones unless that is intended (a subset).",
                          stacklevel=2)
        return splits


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


def _read_cars_folders(root: Path) -> dict[str, ImageList]:
    """The class-folder copy of CARS196: ``anno_{train,test}.csv`` (``file,x1,y1,x2,y2,class``) and
    ``car_data/{train,test}/<class>/<file>`` (or ``car_data/car_data/...``, as the archive nests it).
    Its train/test folders are the classification split; the DML split is by class id, as above."""
    base = root / "car_data"
    if (base / "car_data").is_dir():
        base = base / "car_data"
    paths, classes = [], []
    for split in ("train", "test"):
        files = {path.name: path for path in (base / split).glob("*/*") if path.suffix.lower() in IMAGE_SUFFIXES}
        with open(root / f"anno_{split}.csv", encoding="utf-8", newline="") as table:
            for row in csv.reader(table):
                if not row or not row[-1].strip().isdigit():  # blank lines, a header
                    continue
                if row[0] not in files:
                    raise FileNotFoundError(f"cars: {row[0]} (listed in anno_{split}.csv) is not in {base / split}/<class>/")
                paths.append(files[row[0]])
                classes.append(int(row[-1]))
    return _by_class_range(paths, np.array(classes), 98)


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
        (Layout("CUB_200_2011/{images.txt, image_class_labels.txt, images/<class>/<file>.jpg}",
                ("images.txt", "image_class_labels.txt", "images"), _read_cub),),
        url="https://www.vision.caltech.edu/datasets/cub_200_2011/ (python -m memvir_pl.data fetch cub --root DIR)",
        images=11_788,
    ),
    "cars": FileDataset(
        (Layout("{cars_annos.mat, car_ims/000001.jpg ...} (the original release)", ("cars_annos.mat", "car_ims"),
                _read_cars),
         Layout("{anno_train.csv, anno_test.csv, car_data/{train,test}/<class>/<file>.jpg} (the class-folder copy)",
                ("anno_train.csv", "anno_test.csv", "car_data"), _read_cars_folders)),
        url="a copy of the original release or of its class-folder version (`python -m memvir_pl.data fetch cars` "
            "says where)",
        images=16_185,
    ),
    "sop": FileDataset(
        (Layout("Stanford_Online_Products/{Ebay_train.txt, Ebay_test.txt, <super_class>_final/}",
                ("Ebay_train.txt", "Ebay_test.txt"), _read_sop),),
        url="https://cvgl.stanford.edu/projects/lifted_struct/ (python -m memvir_pl.data fetch sop --root DIR)",
        images=120_053,
    ),
    "inshop": FileDataset(
        (Layout("{list_eval_partition.txt, img/<gender>/<category>/<item_id>/<file>.jpg}",
                ("list_eval_partition.txt", "img"), _read_inshop),),
        url="https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html",
        images=52_712,
    ),
    "folder": FileDataset(
        (Layout("{train/<class>/<image>, test/<class>/<image>} (the official MemVir layout)", ("train", "test"),
                _read_folder),),
        url="your own data (no download)",
    ),
}


def load_file_dataset(name: str, root: str | Path) -> dict[str, ImageList]:
    """``{"train", "test"}`` image lists of dataset ``name`` (one of :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {[*DATASETS, 'glyphs']}")
    return DATASETS[name].load(root, name)
