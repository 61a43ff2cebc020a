"""The emoji data set on fixture packages written here in each source's real layout.

Every package of ``SOURCES`` is written as a small tarball: emoji-datasource (a PNG folder with
``emoji.json``), openmoji (SVGs named by code point), iconify sets with ``chars.json`` and
name-keyed ones, and an emojibase-data name list. Each design set draws an emoji as a
rectangle placed by the emoji and coloured by the set, so every rendering is distinct unless a
case below makes it a copy; the expected counts are worked out by hand in ``EXPECTED``.
"""

from __future__ import annotations

import colorsys
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import transforms as T

from memvir_pl.data import DMLDataModule
from memvir_pl.data.emoji import sources as src
from memvir_pl.data.emoji.build import (
    EmojiSet,
    build_emoji_set,
    collect_candidates,
    drop_near_duplicates,
    load_emoji_set,
    near_identical_pairs,
    thumbnails,
)
from memvir_pl.data.emoji.names import EmojiList, NameTable, canonical, is_skin_tone
from memvir_pl.data.splits import (
    DEFAULT_FRACTIONS,
    connected_groups,
    load_dataclass,
    save_dataclass,
    split_of_key,
)
from memvir_pl.data.transforms import build_transform

# (emojibase hexcode, CLDR label, skin variants)
EMOJIBASE = [
    ("1F600", "grinning face", []),
    ("1F601", "beaming face with smiling eyes", []),  # Unicode name: GRINNING FACE WITH SMILING EYES
    ("1F604", "grinning face with smiling eyes", []),
    ("1F621", "enraged face", []),  # Unicode name: POUTING FACE
    ("1F44B", "waving hand", [("1F44B-1F3FB", "waving hand: light skin tone")]),
    ("2764", "red heart", []),  # Unicode name: HEAVY BLACK HEART
    ("1F3F3-FE0F-200D-1F308", "rainbow flag", []),
    ("27A1", "right arrow", []),
    ("2B05", "left arrow", []),
    ("1F680", "rocket", []),
]
# fully-qualified sequences as the code-point sets spell them (file names, emoji.json, chars.json)
QUALIFIED = {"2764": "2764-FE0F", "27A1": "27A1-FE0F", "2B05": "2B05-FE0F"}
SKIN = "1F44B-1F3FB"
CORE = ["1F600", "1F601", "1F621", "1F44B", "2764", "1F3F3-200D-1F308", "27A1", "2B05"]
# icon names of the name-keyed iconify sets (no chars.json): looked up in the name tables
ICON_NAMES = {
    "1F600": "grinning-face",  # CLDR label
    "1F601": "beaming-face-with-smiling-eyes",  # CLDR label
    "1F604": "grinning-face-with-smiling-eyes",  # ambiguous: CLDR 1F604, Unicode name 1F601
    "1F621": "pouting-face",  # Unicode name only
    "1F44B": "waving-hand",
    SKIN: "waving-hand-light-skin-tone",
    "2764": "red-heart",
    "1F3F3-200D-1F308": "rainbow-flag",
    "27A1": "arrow-right-x",  # unknown itself; its plain alias "right-arrow" matches
    "2B05": "left-arrow",
}
K = 10  # min_designs in the tests
# 14 sets draw CORE and SKIN; hand-worked drops:
# - google's grinning face is apple's with every colour value +3: near-identical (dropped);
# - twitter's left arrow is pixel-identical to its right arrow: dropped from both;
# - fxemoji draws the red heart twice ("red-heart", "heavy-black-heart"): both dropped;
# - 1F604 is drawn by the 8 code-point sets only (ambiguous name elsewhere): < K;
# - the rocket is drawn by apple, google and twitter only: < K.
# Kept but grouped: facebook's waving hand (1F44B, "test" by its key) is its grinning face
# (1F600, "train" by its key) with every colour value +3: near-identical across classes, so
# both classes go to the split of the smaller key, 1F44B.
EXPECTED = {
    "1F600": 13, "1F601": 14, "1F621": 14, "1F44B": 14, "2764": 13,
    "1F3F3-200D-1F308": 14, "27A1": 13, "2B05": 13,
}


def _colour(design: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(design / len(src.SOURCES), 0.9, 0.9)
    return round(255 * r), round(255 * g), round(255 * b)


def _drawing(key: str, design: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int]]:
    """(box in a 64-unit square, colour) of ``design``'s drawing of emoji ``key``."""
    if design == 2 and key == "2B05":  # twitter: left arrow drawn as its right arrow
        key = "27A1"
    colour = _colour(design)
    if design == 3 and key == "1F44B":  # facebook: waving hand as a near copy of its grinning face
        key, colour = "1F600", tuple(v + 3 for v in colour)
    order = [canonical(h) for h, _, _ in EMOJIBASE] + [SKIN]
    c = order.index(key)
    if design == 1 and key == "1F600":  # google: a near copy of apple's
        colour = tuple(v + 3 for v in _colour(0))
    x, y = 4 * (c % 4), 4 * (c // 4)
    return (x, y, x + 40, y + 40), colour


def _png(key: str, design: int) -> bytes:
    box, colour = _drawing(key, design)
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(*colour, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _svg_body(key: str, design: int) -> str:
    (x0, y0, x1, y1), colour = _drawing(key, design)
    return f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="rgb{colour}"/>'


def _write_tarball(path: Path, files: dict[str, bytes | str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _drawn_by(design: str) -> list[str]:
    keys = [*CORE, SKIN]
    if design in ("apple", "google", "twitter"):
        keys.append("1F680")
    return [*keys, "1F604"]  # name-keyed sets draw it under an ambiguous name


def _qualified(key: str) -> str:
    return {"1F3F3-200D-1F308": "1F3F3-FE0F-200D-1F308"}.get(key, QUALIFIED.get(key, key))


def write_packages(root: Path, skip: tuple[str, ...] = ()) -> Path:
    """Every package of ``SOURCES`` and the name data as fixture tarballs in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, bytes | str]] = {}
    for design, source in enumerate(src.SOURCES):
        pkg = files.setdefault(source.package.tarball, {
            "package.json": json.dumps({"name": source.package.name,
                                        "version": source.package.version, "license": "MIT"}),
        })
        keys = _drawn_by(source.design)
        if source.layout == "datasource":
            entries = {}
            for key in keys:
                if key == SKIN:
                    continue
                image = _qualified(key).lower() + ".png"
                entries[key] = {"unified": _qualified(key), "image": image,
                                f"has_img_{source.variant}": True}
                pkg[f"img/{source.variant}/64/{image}"] = _png(key, design)
            entries["1F44B"]["skin_variations"] = {"1F3FB": {
                "unified": SKIN, "image": SKIN.lower() + ".png", f"has_img_{source.variant}": True}}
            pkg[f"img/{source.variant}/64/{SKIN.lower()}.png"] = _png(SKIN, design)
            pkg["emoji.json"] = json.dumps(list(entries.values()))
        elif source.layout == "openmoji":
            for key in keys:
                svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">{_svg_body(key, design)}</svg>'
                pkg[f"{source.variant}/svg/{_qualified(key)}.svg"] = svg
            pkg[f"{source.variant}/svg/E000.svg"] = (  # an OpenMoji extra, not an emoji
                '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"/>')
        else:
            with_chars = source.design.startswith("fluent-emoji-")
            icons, chars, aliases = {}, {}, {}
            for key in keys:
                name = ICON_NAMES[key] if not with_chars else f"icon-{key.lower()}"
                icons[name] = {"body": _svg_body(key, design)}
                if with_chars:
                    chars[_qualified(key).lower()] = name
                    chars[key.lower()] = name  # the unqualified spelling, same icon
            if not with_chars:
                aliases["right-arrow"] = {"parent": "arrow-right-x"}
                aliases["arrow-left-mirrored"] = {"parent": "arrow-right-x", "hFlip": True}
                icons["baby-1"] = {"body": _svg_body("1F680", design)}  # unknown name
                icons["old-grinning"] = {"body": _svg_body("1F600", design), "hidden": True}
            if source.design == "fxemoji":  # two icons for one emoji
                icons["heavy-black-heart"] = {"body": _svg_body("2764", 0)}
            pkg["icons.json"] = json.dumps({"prefix": source.design, "icons": icons,
                                            "aliases": aliases, "width": 64, "height": 64})
            pkg["chars.json"] = json.dumps(chars)
            pkg["info.json"] = json.dumps({"author": {"name": f"{source.design} authors"}})
    data = [{"hexcode": h, "label": label,
             **({"skins": [{"hexcode": sh, "label": sl} for sh, sl in skins]} if skins else {})}
            for h, label, skins in EMOJIBASE]
    files[src.NAME_DATA.tarball] = {"package.json": json.dumps({"license": "MIT"}),
                                    "en/data.json": json.dumps(data)}
    for tarball, contents in files.items():
        if tarball not in skip:
            _write_tarball(root / tarball, contents)
    return root


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Path:
    return write_packages(tmp_path_factory.mktemp("emoji") / "packages")


@pytest.fixture(scope="module")
def emoji(packages):
    return build_emoji_set(packages, render_size=32, min_designs=K)


def _counts(emoji_set) -> dict[str, int]:
    counts = np.bincount(emoji_set.class_ids, minlength=len(emoji_set.classes))
    return dict(zip(emoji_set.classes, counts.tolist(), strict=True))


def test_canonical_keys_and_skin_tones():
    assert canonical("2764-fe0f") == canonical("2764") == "2764"
    assert canonical("1f3f3-FE0F-200d-1f308") == "1F3F3-200D-1F308"
    assert canonical("0023_fe0f_20e3") == "23-20E3"
    assert is_skin_tone("1F44B-1F3FB") and is_skin_tone("1F9D1-1F3FF-200D-1F4BB")
    assert not is_skin_tone("1F44B") and not is_skin_tone("1F9D1-200D-1F9B0")


def test_name_table_matches_exactly_and_drops_ambiguous_names():
    emoji = EmojiList.from_emojibase(
        [{"hexcode": h, "label": label, "skins": [{"hexcode": a, "label": b} for a, b in s]}
         for h, label, s in EMOJIBASE])
    table = NameTable(emoji, [{"1f600": "grinning-face", "2764-fe0f": "heart-red"}])
    assert table.lookup(["Grinning face"]).key == "1F600"  # CLDR label
    assert table.lookup(["pouting_face"]).key == "1F621"  # Unicode name of U+1F621
    assert table.lookup(["heart-red"]).key == "2764"  # another set's chars.json
    assert table.lookup(["waving-hand-light-skin-tone"]).key == SKIN
    ambiguous = table.lookup(["grinning-face-with-smiling-eyes"])
    assert ambiguous.status == "ambiguous" and ambiguous.candidates == {"1F601", "1F604"}
    assert table.lookup(["baby-1"]).status == "unknown"  # no suffix stripping, no guess
    assert table.lookup(["arrow-right-x", "right-arrow"]).key == "27A1"  # through an alias
    assert table.lookup(["red-heart", "grinning-face"]).status == "ambiguous"


def test_code_point_and_name_mapping_per_layout(packages):
    candidates, _, stats = collect_candidates(packages, src.SOURCES, keep_skin_tones=False)
    drawn = {(src.SOURCES[c.design].design, c.key) for c in candidates}
    # code-point sets: emoji.json (+ skin variations), openmoji file names, chars.json
    for design in ("apple", "openmoji", "openmoji-black", "fluent-emoji-flat"):
        assert {k for d, k in drawn if d == design} == set(CORE) | {"1F604"} | (
            {"1F680"} if design == "apple" else set())
    assert stats["openmoji"].not_emoji == 1  # E000
    assert stats["apple"].skin_tone == stats["fluent-emoji-flat"].skin_tone == 1
    # name-keyed sets: matched / ambiguous / unknown, hidden icons skipped
    noto = stats["noto-v1"]
    assert (noto.images, noto.names_matched, noto.names_ambiguous, noto.names_unknown) == (
        11, 9, 1, 1)
    assert noto.skin_tone == 1 and {k for d, k in drawn if d == "noto-v1"} == set(CORE)
    assert noto.unmatched_examples == ["grinning-face-with-smiling-eyes", "baby-1"]
    assert stats["fxemoji"].conflicting == 2
    assert ("fxemoji", "2764") not in drawn


def test_build_counts_match_the_hand_worked_drops(emoji):
    assert _counts(emoji) == EXPECTED
    s = emoji.summary
    assert s["near_duplicates_dropped"] == 1
    assert s["cross_class_identical_dropped"] == 2
    assert s["classes"] == len(EXPECTED) and s["images"] == sum(EXPECTED.values())
    assert emoji.images.shape == (s["images"], 32, 32, 3) and emoji.images.dtype == np.uint8
    # which renderings went: google's grinning face, twitter's two arrows, fxemoji's heart
    kept = {(emoji.designs[d], emoji.classes[c])
            for c, d in zip(emoji.class_ids, emoji.design_ids, strict=True)}
    assert {("google", "1F600"), ("twitter", "27A1"), ("twitter", "2B05"),
            ("fxemoji", "2764")}.isdisjoint(kept)
    assert ("apple", "1F600") in kept
    # composited on white: a pixel outside every rectangle is white
    assert (emoji.images[:, -1, -1] == 255).all()
    assert emoji.labels[emoji.classes.index("1F621")] == "enraged face"


def test_skin_tones_can_be_kept_as_their_own_classes(packages):
    kept = build_emoji_set(packages, render_size=16, min_designs=K, keep_skin_tones=True)
    assert _counts(kept) == {**EXPECTED, SKIN: 14}


def test_min_designs_rule(packages):
    loose = build_emoji_set(packages, render_size=16, min_designs=8)
    assert _counts(loose) == {**EXPECTED, "1F604": 8}
    strict = build_emoji_set(packages, render_size=16, min_designs=14)
    assert _counts(strict) == {k: n for k, n in EXPECTED.items() if n >= 14}
    # not rendered (< 14 candidates): the rocket, 1F604, 2764 (fxemoji's conflict);
    # dropped after cleaning: 1F600, 27A1, 2B05
    assert strict.summary["too_few_designs_classes_dropped"] == 3 + 3


def test_near_duplicate_rule_by_hand():
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[1] += 3  # mean absolute difference 3 to image 0: near-identical
    images[2] += 5  # 5: distinct
    images[3, :16] = 9  # 4.5 from image 0 (half at 9) and from image 2 (halves at 4 and 5)
    thumbs = thumbnails(images)
    assert thumbs.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(drop_near_duplicates(thumbs, 4.0), [True, False, True, True])
    np.testing.assert_array_equal(drop_near_duplicates(thumbs, 4.6), [True, False, True, False])
    # compared with kept renderings only: at 6, image 2 goes (5 to image 0), image 3 too
    np.testing.assert_array_equal(drop_near_duplicates(thumbs, 6.0), [True, False, False, False])


def test_connected_groups_by_hand():
    # 0-3 directly, 3-5 and 5-1 chain them all to 0; 2-4 alone; 6 in no pair
    pairs = np.array([[3, 0], [5, 3], [1, 5], [4, 2]])
    np.testing.assert_array_equal(connected_groups(7, pairs), [0, 0, 2, 0, 2, 0, 6])
    np.testing.assert_array_equal(connected_groups(3, np.zeros((0, 2), np.int64)), [0, 1, 2])


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_prefiltered_search_finds_the_pairs_of_an_all_pairs_loop():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(6):
        base = rng.integers(40, 216, (32, 32, 3))
        images.append(base)
        for amplitude in (1, 2, 3, 4, 6):
            # +-amplitude per 2 x 2 pixel block (one thumbnail cell), random signs: a 16 x 16
            # MAD of exactly `amplitude` to the base, much less on 4 x 4 thumbnails
            signs = rng.choice([-1, 1], (16, 16, 3)).repeat(2, axis=0).repeat(2, axis=1)
            images.append(base + amplitude * signs)
    thumbs = thumbnails(np.stack(images).astype(np.uint8))
    n = len(thumbs)
    slow = [[i, j] for i in range(n) for j in range(i + 1, n) if _mad(thumbs[i], thumbs[j]) < 4.0]
    assert len(slow) > 6 * 3  # each base with its three copies under 4, and copy pairs
    for chunk in (1, 5, 1024):
        assert near_identical_pairs(thumbs, 4.0, chunk=chunk).tolist() == slow
    # the 4 x 4 prefilter lets through pairs that only the exact MAD rejects (amplitude 4 and 6)
    coarse = thumbs.reshape(n, 4, 4, 4, 4, 3).mean(axis=(2, 4))
    passed = [[i, j] for i in range(n) for j in range(i + 1, n) if _mad(coarse[i], coarse[j]) < 4.0]
    assert len(passed) > len(slow) and all(p in passed for p in slow)
    assert near_identical_pairs(thumbs[:1], 4.0).shape == (0, 2)


def test_near_identical_classes_share_a_split(emoji):
    fractions = {"train": 0.5, "val": 0.2, "test": 0.3}
    hand, face = emoji.classes.index("1F44B"), emoji.classes.index("1F600")
    # by their own keys they would be split apart
    assert (split_of_key("1F44B", fractions), split_of_key("1F600", fractions)) == ("test", "train")
    assert split_of_key("1F600") != split_of_key("1F44B")  # default fractions too
    facebook = emoji.designs.index("facebook")
    row = {(c, d): i for i, (c, d) in enumerate(zip(emoji.class_ids.tolist(), emoji.design_ids.tolist(),
                                                      strict=True))}
    assert emoji.cross_class_pairs.tolist() == [sorted([row[hand, facebook], row[face, facebook]])]
    groups = list(range(len(emoji.classes)))
    groups[face] = hand
    assert emoji.class_groups.tolist() == groups
    for f in (fractions, DEFAULT_FRACTIONS):
        splits = emoji.class_splits(f)
        assert splits[face] == splits[hand] == split_of_key("1F44B", f)
    assert "1F600" in emoji.split("test", fractions).classes
    s = emoji.summary
    assert (s["class_groups_joined"], s["classes_in_joined_groups"],
            s["renderings_near_identical_across_classes"]) == (1, 2, 2)
    # no rendering of one split is near-identical to one of another: all pairs, by a slow loop
    thumbs = thumbnails(emoji.images)
    split_of_row = [emoji.class_splits(fractions)[c] for c in emoji.class_ids.tolist()]
    for i in range(len(thumbs)):
        for j in range(i + 1, len(thumbs)):
            if split_of_row[i] != split_of_row[j]:
                assert _mad(thumbs[i], thumbs[j]) >= 4.0


def test_report_counts_near_identical_renderings_by_key_and_by_group(emoji, packages, tmp_path, monkeypatch):
    """The benchmark's emoji data report (benchmarks/quality_bench/emoji_report.py)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from quality_bench.emoji_report import data_report, near_identical_to_training

    fractions = {"train": 0.5, "val": 0.2, "test": 0.3}
    # by key, facebook's waving hand (test) copies its grinning face (train): 1 rendering, 1 class
    by_key = near_identical_to_training(emoji, [split_of_key(k, fractions) for k in emoji.classes])
    assert by_key == {"val": (0, 0), "test": (1, 1)}
    assert near_identical_to_training(emoji, emoji.class_splits(fractions)) == {"val": (0, 0), "test": (0, 0)}
    text = data_report(packages, tmp_path, options={"render_size": 32, "min_designs": K}, fractions=fractions)
    assert "groups of 2+ classes: **1**, holding 2 classes" in text
    assert "largest groups: 2 classes (waving hand, grinning face)" in text
    assert "| by class key alone | 0 (0) | 1 (1) |" in text
    assert "| by class group (used) | 0 (0) | 0 (0) |" in text


def test_splits_are_stable_and_class_disjoint(emoji, packages):
    fractions = {"train": 0.5, "val": 0.2, "test": 0.3}
    splits = {name: emoji.split(name, fractions) for name in ("train", "val", "test")}
    classes = [set(s.classes) for s in splits.values()]
    assert set().union(*classes) == set(emoji.classes)
    assert sum(map(len, classes)) == len(emoji.classes)  # disjoint
    group_key = {"1F600": "1F44B"}  # the smallest key of its group; the others are alone
    for name, split in splits.items():
        assert all(split_of_key(group_key.get(k, k), fractions) == name for k in split.classes)
        assert len(split.labels) == sum(_counts(emoji)[k] for k in split.classes)
        assert list(split.labels) == sorted(split.labels)
        assert set(split.labels.tolist()) == set(range(split.num_classes))
    # a class's split depends on its group's smallest key only: a smaller set puts it in the
    # same split
    subset = build_emoji_set(packages, render_size=16, min_designs=14)
    assert 0 < len(subset.classes) < len(emoji.classes)
    for key in subset.classes:
        assert split_of_key(key, fractions) == emoji.class_splits(fractions)[emoji.classes.index(key)]


def test_few_variant_takes_the_classes_with_most_renderings(emoji):
    everything = {"train": 1.0, "val": 0.0, "test": 0.0}
    few = emoji.split("train", everything, max_classes=3)
    # four classes have 14 renderings; ties go to the smaller key
    assert few.classes == ("1F3F3-200D-1F308", "1F44B", "1F601")
    assert len(few.labels) == 3 * 14 and set(few.designs) <= set(emoji.designs)
    assert emoji.split("train", everything).num_classes == len(EXPECTED)


def test_cache_round_trip_keeps_every_field(emoji, tmp_path):
    save_dataclass(emoji, tmp_path / "emoji.npz")
    loaded = load_dataclass(EmojiSet, tmp_path / "emoji.npz")
    assert len(emoji.cross_class_pairs) == 1
    for name in ("images", "class_ids", "design_ids", "class_groups", "cross_class_pairs"):
        original = getattr(emoji, name)
        assert getattr(loaded, name).dtype == original.dtype and np.array_equal(getattr(loaded, name), original)
    assert (loaded.classes, loaded.labels, loaded.designs) == (emoji.classes, emoji.labels, emoji.designs)
    assert all(isinstance(k, str) for k in loaded.classes)
    assert loaded.summary == json.loads(json.dumps(emoji.summary))


def test_missing_packages_name_the_files_and_the_fetch_command(tmp_path):
    missing = src.SOURCES[6].package.tarball
    root = write_packages(tmp_path / "packages", skip=(missing,))
    with pytest.raises(FileNotFoundError, match=missing) as error:
        load_emoji_set(root)
    assert src.FETCH_COMMAND in str(error.value) and "1 package tarball" in str(error.value)
    dm = DMLDataModule(dataset="emoji", root=str(tmp_path / "nowhere"), transform="efficientnet")
    with pytest.raises(FileNotFoundError, match="missing 14 package tarball"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="needs data.root"):
        DMLDataModule(dataset="emoji", transform="efficientnet")


def test_datamodule_batches_without_flip(packages, tmp_path):
    options = {"render_size": 32, "min_designs": K, "cache_dir": str(tmp_path),
               "fractions": {"train": 0.6, "val": 0.0, "test": 0.4}, "train_classes": 2}
    dm = DMLDataModule(dataset="emoji", root=str(packages), transform="efficientnet",
                       image_size=24, hflip=False, batch_size=8, options=options)
    dm.setup("fit")
    train = dm.split("train")
    assert train.num_classes == dm.num_classes == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 24, 24) and batch["image"].dtype == torch.float32
    torch.testing.assert_close(batch["label"], torch.from_numpy(train.labels[batch["index"]]))
    assert list(tmp_path.glob("emoji-*.npz"))  # cached
    geometry = dm.split_dataset("train", train=True).transform.transforms
    assert any(isinstance(t, T.RandomResizedCrop) for t in geometry)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in geometry)
    flipping = build_transform("efficientnet", True, 24).transforms
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in flipping)
    # evaluation: resize + centre crop of the cached rendering, (x - 127) / 128
    test = dm.split("test")
    item = dm.split_dataset("test")[0]
    expected = T.Compose([T.Resize(27), T.CenterCrop(24), T.PILToTensor()])(
        Image.fromarray(test.images[0])).float()
    torch.testing.assert_close(item["image"], (expected - 127) / 128)


def test_configs_compose_to_the_documented_variants():
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfgs = {name: compose(overrides=[f"+data={name}", "+paths.data_dir=/d",
                                         "+paths.cache_dir=/c", "+seed=0"]).data
                for name in ("emoji", "emoji_few")}
    for cfg in cfgs.values():
        assert cfg.dataset == "emoji" and cfg.root == "/d/emoji/packages"
        assert cfg.hflip is False and cfg.transform == "efficientnet"
        assert cfg.options.min_designs == 7 and cfg.options.keep_skin_tones is False
    assert cfgs["emoji"].options.train_classes is None
    assert cfgs["emoji_few"].options.train_classes == 100
