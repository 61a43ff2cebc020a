"""Writers of tiny datasets in the official layouts, for the data tests.

Each writer puts small JPEGs and the annotation files under ``root`` and returns the expected
content: split -> list of (image path, original class id[, is_query]) in file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 18)) -> Path:
    """A small random RGB JPEG (width, height = size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")
    return path


def write_cub(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """CUB_200_2011 layout: classes 1, 2, 100 train; 101, 150, 200 test; 2-3 images each."""
    classes = {1: 3, 2: 2, 100: 2, 101: 3, 150: 2, 200: 2}
    images, labels, expected = [], [], {"train": [], "test": []}
    for class_id, count in classes.items():
        for k in range(count):
            rel = f"{class_id:03d}.Bird_{class_id}/Bird_{class_id}_{k:04d}.jpg"
            image_id = len(images) + 1
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {class_id}")
            write_image(root / "images" / rel, seed=image_id)
            split = "train" if class_id <= 100 else "test"
            expected[split].append((root / "images" / rel, class_id))
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    # the classification split, which the DML protocol must ignore
    (root / "train_test_split.txt").write_text(
        "\n".join(f"{i + 1} {i % 2}" for i in range(len(images))) + "\n"
    )
    return expected


def write_cars(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """CARS196 layout: cars_annos.mat (official struct fields) + car_ims/; classes 1, 50, 98
    train and 99, 150, 196 test; the file's ``test`` flag alternates and must be ignored."""
    from scipy.io import savemat

    classes = [1, 1, 50, 98, 98, 99, 150, 150, 196, 196]
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    records = np.zeros((1, len(classes)), dtype=[(f, object) for f in fields])
    expected: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for i, class_id in enumerate(classes):
        rel = f"car_ims/{i + 1:06d}.jpg"
        write_image(root / rel, seed=100 + i)
        values = [rel, 1, 2, 20, 15, class_id, i % 2]
        for field, value in zip(fields, values, strict=True):
            records[0, i][field] = np.array([[value]]) if field != "relative_im_path" else value
        expected["train" if class_id <= 98 else "test"].append((root / rel, class_id))
    class_names = np.array([[f"Car {c}" for c in range(1, 197)]], dtype=object)
    savemat(root / "cars_annos.mat", {"annotations": records, "class_names": class_names})
    return expected


def write_cars_folders(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """The class-folder copy of CARS196: anno_{train,test}.csv (no header) and
    car_data/car_data/{train,test}/<class name>/<file>; its train and test folders both hold
    classes of both DML halves (the classification split), which the DML split must ignore."""
    rows = {"train": [(1, "AM General Hummer SUV 2000"), (99, "Ram C-V Cargo Van Minivan 2012"),
                      (196, "smart fortwo Convertible 2012")],
            "test": [(1, "AM General Hummer SUV 2000"), (98, "Mercedes-Benz Sprinter Van 2012"),
                     (150, "Lamborghini Diablo Coupe 2001")]}
    expected: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for split, items in rows.items():
        lines = []
        for k, (class_id, class_name) in enumerate(items):
            name = f"{k + 1:05d}.jpg"  # the same file names in both folders, as in the copy
            path = write_image(root / "car_data" / "car_data" / split / class_name / name, seed=300 + 10 * k + len(split))
            lines.append(f"{name},1,2,20,15,{class_id}")
            expected["train" if class_id <= 98 else "test"].append((path, class_id))
        (root / f"anno_{split}.csv").write_text("\n".join(lines) + "\n")
    return expected


def write_sop(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """Stanford_Online_Products layout: Ebay_train.txt / Ebay_test.txt with a header line."""
    splits = {"train": [(1, 1), (1, 1), (7, 2), (7, 2), (3, 1)], "test": [(9, 3), (9, 3), (12, 4)]}
    expected: dict[str, list[tuple[Path, int]]] = {}
    image_id = 0
    for name, rows in splits.items():
        lines = ["image_id class_id super_class_id path"]
        expected[name] = []
        for class_id, super_id in rows:
            image_id += 1
            rel = f"super{super_id}_final/{class_id}_{image_id}.JPG"
            write_image(root / rel, seed=200 + image_id)
            lines.append(f"{image_id} {class_id} {super_id} {rel}")
            expected[name].append((root / rel, class_id))
        (root / f"Ebay_{name}.txt").write_text("\n".join(lines) + "\n")
    return expected


def write_inshop(root: Path) -> dict[str, list[tuple[Path, str, bool]]]:
    """In-Shop layout: list_eval_partition.txt (count line, header, rows) + img/."""
    rows = [
        ("id_00000001", "train"),
        ("id_00000001", "train"),
        ("id_00000004", "train"),
        ("id_00000004", "train"),
        ("id_00000002", "query"),
        ("id_00000002", "gallery"),
        ("id_00000002", "gallery"),
        ("id_00000003", "gallery"),
        ("id_00000003", "query"),
    ]
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    expected: dict[str, list[tuple[Path, str, bool]]] = {"train": [], "query": [], "gallery": []}
    for k, (item, status) in enumerate(rows):
        rel = f"img/WOMEN/Dresses/{item}/{k:02d}_1_front.jpg"
        write_image(root / rel, seed=300 + k)
        lines.append(f"{rel}    {item}  {status}")
        expected[status].append((root / rel, item, status == "query"))
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return {"train": expected["train"], "test": expected["query"] + expected["gallery"]}


def write_folder(root: Path) -> dict[str, list[tuple[Path, str]]]:
    """The MemVir folder layout root/{train,test}/<class>/<image>, with a non-image file."""
    layout = {"train": {"cat": 2, "ant": 3}, "test": {"dog": 2, "bee": 1, "cow": 2}}
    expected: dict[str, list[tuple[Path, str]]] = {}
    for split, classes in layout.items():
        expected[split] = []
        for name, count in sorted(classes.items()):
            for k in range(count):
                path = write_image(root / split / name / f"{k}.jpg", seed=400 + k)
                expected[split].append((path, name))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return expected


def contiguous(class_ids: list) -> list[int]:
    """Reference labels: the rank of each class id among the sorted distinct ids."""
    order = {c: i for i, c in enumerate(sorted(set(class_ids)))}
    return [order[c] for c in class_ids]
