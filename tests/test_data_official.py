"""The file datasets read their official layouts into class-disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memvir_pl.data import (
    ImageFileDataset,
    UnreadableImageError,
    build_transform,
    hold_out_classes,
    load_file_dataset,
)
from memvir_pl.data.records import make_image_list
from tests.data_fixtures import (
    contiguous,
    write_cars,
    write_cars_folders,
    write_cub,
    write_folder,
    write_image,
    write_inshop,
    write_sop,
)

WRITERS = {
    "cub": write_cub,
    "cars": write_cars,
    "sop": write_sop,
    "inshop": write_inshop,
    "folder": write_folder,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_splits_paths_and_contiguous_labels(tmp_path, name):
    expected = WRITERS[name](tmp_path)
    splits = load_file_dataset(name, tmp_path)
    assert set(splits) == {"train", "test"}
    for split, rows in expected.items():
        images = splits[split]
        class_ids = [row[1] for row in rows]
        assert sorted(images.paths) == sorted(str(row[0]) for row in rows)
        by_path = dict(zip(images.paths, images.labels.tolist(), strict=True))
        reference = dict(zip((str(r[0]) for r in rows), contiguous(class_ids), strict=True))
        assert by_path == reference
        assert images.num_classes == len(set(class_ids))
        assert sorted(set(images.labels.tolist())) == list(range(images.num_classes))
        assert list(images.classes) == [str(c) for c in sorted(set(class_ids))]
    train_classes = {row[1] for row in expected["train"]}
    assert train_classes.isdisjoint(row[1] for row in expected["test"])


def test_cub_ignores_classification_split_and_splits_at_class_100(tmp_path):
    write_cub(tmp_path)
    splits = load_file_dataset("cub", tmp_path)
    assert splits["train"].classes == ("1", "2", "100")
    assert splits["test"].classes == ("101", "150", "200")
    assert len(splits["train"].paths) == 7 and len(splits["test"].paths) == 7


def test_cars_ignores_test_flag_and_splits_at_class_98(tmp_path):
    write_cars(tmp_path)
    splits = load_file_dataset("cars", tmp_path)
    assert splits["train"].classes == ("1", "50", "98")
    assert splits["test"].classes == ("99", "150", "196")
    assert splits["train"].labels.tolist() == [0, 0, 1, 2, 2]


def test_cars_class_folder_copy_reads_as_the_original_split_by_class_id(tmp_path):
    expected = write_cars_folders(tmp_path)
    splits = load_file_dataset("cars", tmp_path)
    assert splits["train"].classes == ("1", "98") and splits["test"].classes == ("99", "150", "196")
    for split, rows in expected.items():
        assert sorted(splits[split].paths) == sorted(str(path) for path, _ in rows)
    (tmp_path / "car_data" / "car_data" / "test" / "Lamborghini Diablo Coupe 2001" / "00003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="00003.jpg .listed in anno_test.csv. is not in"):
        load_file_dataset("cars", tmp_path)


def test_a_root_one_level_too_high_is_named_and_counts_are_checked(tmp_path):
    write_cub(tmp_path / "CUB_200_2011")
    with pytest.raises(FileNotFoundError, match=f"did you mean data.root={tmp_path / 'CUB_200_2011'}"):
        load_file_dataset("cub", tmp_path)
    with pytest.warns(UserWarning, match="14 images listed .* the official release has 11,788"):
        load_file_dataset("cub", tmp_path / "CUB_200_2011")


def test_inshop_query_gallery_flags_and_shared_labels(tmp_path):
    expected = write_inshop(tmp_path)
    test = load_file_dataset("inshop", tmp_path)["test"]
    assert test.is_query is not None
    assert test.paths == tuple(str(row[0]) for row in expected["test"])
    assert test.is_query.tolist() == [row[2] for row in expected["test"]]
    assert test.is_query.tolist() == [True, True, False, False, False]
    # items 2 and 3 -> labels 0 and 1 over query and gallery together
    assert test.labels.tolist() == [0, 1, 0, 0, 1]
    assert load_file_dataset("inshop", tmp_path)["train"].is_query is None


def test_folder_skips_non_images(tmp_path):
    write_folder(tmp_path)
    train = load_file_dataset("folder", tmp_path)["train"]
    assert not any(p.endswith(".txt") for p in train.paths)
    assert train.classes == ("ant", "cat")


@pytest.mark.parametrize(
    ("name", "missing", "url_part"),
    [
        ("cub", "image_class_labels.txt", "cub_200_2011"),
        ("cars", "cars_annos.mat", "fetch cars"),
        ("sop", "Ebay_test.txt", "lifted_struct"),
        ("inshop", "list_eval_partition.txt", "DeepFashion"),
        ("folder", "test", "train/<class>"),
    ],
)
def test_missing_files_name_what_and_where(tmp_path, name, missing, url_part):
    WRITERS[name](tmp_path)
    target = tmp_path / missing
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_file_dataset(name, tmp_path)
    message = str(error.value)
    assert missing in message and str(tmp_path) in message and url_part in message


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_file_dataset("mnist", "/nowhere")


def test_unreadable_image_names_the_file(tmp_path):
    write_cub(tmp_path)
    train = load_file_dataset("cub", tmp_path)["train"]
    broken = train.paths[1]
    with open(broken, "wb") as f:
        f.write(b"not a jpeg at all")
    dataset = ImageFileDataset(train, build_transform("imagenet", train=False, image_size=16))
    assert dataset[0]["image"].shape == (3, 16, 16)
    with pytest.raises(UnreadableImageError, match=broken):
        dataset[1]


def test_image_item_values(tmp_path):
    expected = write_inshop(tmp_path)
    test = load_file_dataset("inshop", tmp_path)["test"]
    dataset = ImageFileDataset(test, build_transform("bninception", train=False, image_size=16))
    assert (dataset[1]["label"], dataset[1]["index"], dataset[1]["is_query"]) == (1, 1, True)
    item = dataset[4]
    assert (item["label"], item["index"], item["is_query"]) == (1, 4, False)
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert len(dataset) == len(expected["test"])


def test_hold_out_classes_is_disjoint_stable_and_sized():
    rng = np.random.default_rng(0)
    class_ids = rng.integers(1000, 2000, size=400)
    images = make_image_list([f"{i}.jpg" for i in range(400)], class_ids)
    kept, held = hold_out_classes(images, 0.25)
    assert set(kept.classes).isdisjoint(held.classes)
    assert set(kept.classes) | set(held.classes) == set(images.classes)
    assert held.num_classes == round(0.25 * images.num_classes)
    assert len(kept.paths) + len(held.paths) == 400
    # the same classes are held out whatever the order of the list
    order = rng.permutation(400)
    shuffled = make_image_list([f"{i}.jpg" for i in order], class_ids[order])
    assert set(hold_out_classes(shuffled, 0.25)[1].classes) == set(held.classes)
    # labels stay contiguous and follow the class of each path
    by_path = dict(zip(held.paths, (held.classes[label] for label in held.labels), strict=True))
    assert all(
        by_path[f"{i}.jpg"] == str(class_ids[i]) for i in range(400) if f"{i}.jpg" in by_path
    )
    with pytest.raises(ValueError, match="val_fraction"):
        hold_out_classes(images, 1.0)


def test_write_image_fixture_is_readable(tmp_path):
    path = write_image(tmp_path / "a.jpg", seed=0, size=(30, 20))
    from memvir_pl.data.datasets import read_rgb

    assert read_rgb(str(path)).size == (30, 20)
