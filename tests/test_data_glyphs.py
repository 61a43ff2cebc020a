"""The embedded glyph benchmark: fonts, rendering in the em box, cleaning, splits, cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fontTools.ttLib import TTFont

from memvir_pl.data import glyphs as glyph_module
from memvir_pl.data.charsets import parse_chars
from memvir_pl.data.fonts import font_charmap, matplotlib_font_dir, resolve_fonts
from memvir_pl.data.glyphs import (
    BASELINE_FRACTION,
    EM_FRACTION,
    build_glyph_set,
    glyph_cache_key,
    load_glyph_set,
    open_face,
    render,
    split_of,
)

FONT_DIR = matplotlib_font_dir()


@pytest.fixture(scope="module")
def default_set():
    return load_glyph_set()


def _faces(*names):
    return resolve_fonts([str(FONT_DIR / name) for name in names])


def _ink_rows(image: np.ndarray) -> np.ndarray:
    return np.flatnonzero(image.max(axis=1) >= 128)


def test_matplotlib_fonts_are_the_29_text_fonts():
    names = [face.name for face in resolve_fonts("matplotlib")]
    assert len(names) == 29
    assert sum(n.startswith("DejaVu") for n in names) == 14
    assert sum(n.startswith("STIXGeneral") for n in names) == 4
    assert sum(n.startswith("STIXNonUni") for n in names) == 4
    assert sorted(n for n in names if n.startswith("cm")) == [
        f"cm{x}10.ttf" for x in ("b", "mi", "r", "ss", "sy", "ti", "tt")
    ]


def test_tex_encoded_fonts_keep_only_entries_named_after_their_character():
    raw = TTFont(str(FONT_DIR / "cmr10.ttf")).getBestCmap()
    assert raw[ord("{")] == "emdash" and raw[ord("A")] == "A"
    cmr = font_charmap(_faces("cmr10.ttf")[0])
    assert ord("A") in cmr and ord("{") not in cmr and ord("\\") not in cmr
    assert len(cmr) == 83
    dejavu = font_charmap(_faces("DejaVuSans.ttf")[0])
    assert ord("Ω") in dejavu and len(dejavu) == 5906  # a Unicode font keeps all its entries


def test_missing_fonts_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="no font file matches"):
        resolve_fonts(str(tmp_path / "**" / "*.otf"))
    with pytest.raises(FileNotFoundError, match="nofont.ttf"):
        resolve_fonts(str(tmp_path / "nofont.ttf"))


def test_glyphs_keep_size_and_position_in_the_em_box():
    face = _faces("DejaVuSans.ttf")[0]
    size = 32
    em = round(EM_FRACTION * size)
    baseline = BASELINE_FRACTION * size
    big_x, small_x, dot = render(open_face(face, size), [ord("X"), ord("x"), ord(".")], size)
    font = TTFont(face.path)
    units = font["head"].unitsPerEm
    # ink height = the glyph's outline height at an em of `em` pixels (+-1 px antialiasing)
    for image, name in ((big_x, "X"), (small_x, "x")):
        outline = font["glyf"][name]
        assert abs(len(_ink_rows(image)) - (outline.yMax - outline.yMin) / units * em) <= 1.0
    # all three sit on the same baseline; the dot stays a dot, not scaled to fit
    for image in (big_x, small_x, dot):
        assert abs(_ink_rows(image).max() + 1 - baseline) <= 1.0
    assert len(_ink_rows(dot)) <= 4


def test_a_glyph_freetype_cannot_render_stays_blank_with_a_warning(monkeypatch, caplog):
    face = _faces("DejaVuSans.ttf")[0]
    draw_text = glyph_module.ImageDraw.ImageDraw.text

    def broken_b(self, xy, text, *args, **kwargs):  # a font whose hinting code fails on "B"
        if text == "B":
            raise OSError("invalid opcode")
        return draw_text(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(glyph_module.ImageDraw.ImageDraw, "text", broken_b)
    a, b, c = render(open_face(face, 32), [ord("A"), ord("B"), ord("C")], 32)
    assert a.max() == 255 and c.max() == 255 and b.max() == 0
    assert "1 glyphs could not be rendered" in caplog.text and "U+0042: invalid opcode" in caplog.text


def test_build_is_deterministic():
    faces = _faces("DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneral.ttf", "cmr10.ttf")
    chars = parse_chars("ABCDEFabcdef0123%&")
    first = build_glyph_set(faces, chars, image_size=20, min_fonts=2)
    second = build_glyph_set(faces, chars, image_size=20, min_fonts=2)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.codepoints, second.codepoints)
    assert np.array_equal(first.font_ids, second.font_ids)
    assert first.images.shape[1:] == (20, 20) and first.images.dtype == np.uint8


def test_planted_duplicate_font_homoglyphs_and_blank_are_dropped(tmp_path):
    copy = tmp_path / "PlantedCopy.ttf"
    shutil.copy(FONT_DIR / "DejaVuSans.ttf", copy)
    faces = _faces("DejaVuSans.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf") + resolve_fonts(
        str(copy)
    )
    latin_a, alpha, cyrillic_a, blank = ord("A"), ord("Α"), ord("А"), 0x2800
    kept = [ord(c) for c in "BbЖ"] + [latin_a]
    # premise: the three capital A's render identically in every face, U+2800 is blank
    with_blank = 0
    for face in faces:
        a, b, c, d = render(open_face(face, 32), [latin_a, alpha, cyrillic_a, blank], 32)
        assert np.array_equal(a, b) and np.array_equal(a, c)
        if blank in font_charmap(face):
            with_blank += 1
            assert d.max() == 0
    assert with_blank >= 3
    glyphs = build_glyph_set(faces, sorted(kept + [alpha, cyrillic_a, blank]), min_fonts=3)
    summary = glyphs.summary
    assert summary["blank"] == with_blank
    assert summary["homoglyph_chars_dropped"] == 2
    assert summary["duplicate_instances_dropped"] == len(kept)  # every image of the copy
    assert summary["classes"] == len(kept) and summary["images"] == 3 * len(kept)
    assert sorted(set(glyphs.codepoints.tolist())) == sorted(kept)
    assert 3 not in glyphs.font_ids  # the copy's renderings are all gone
    # the kept images are exactly the renderings of the three distinct fonts
    for font_id, face in enumerate(faces[:3]):
        reference = render(open_face(face, 32), sorted(kept), 32)
        assert np.array_equal(glyphs.images[glyphs.font_ids == font_id], reference)


def test_default_set_is_clean_and_splits_are_disjoint(default_set):
    glyphs, summary = default_set, default_set.summary
    assert summary["fonts"] == 29 and summary["candidates"] == 2324
    assert summary["classes"] == len(np.unique(glyphs.codepoints)) > 1400
    assert summary["images"] == len(glyphs.images)
    assert (
        summary["candidates"]
        - summary["homoglyph_chars_dropped"]
        - summary["too_few_styles_chars_dropped"]
        == summary["classes"]
    )
    dropped = (
        "blank",
        "homoglyph_images_dropped",
        "cross_class_identical_dropped",
        "duplicate_instances_dropped",
    )
    assert (
        summary["rendered"]
        - sum(summary[k] for k in dropped)
        - summary["too_few_styles_images_dropped"]
        == summary["images"]
    )
    # no two images of the set are equal; every class keeps >= min_fonts renderings
    assert len({image.tobytes() for image in glyphs.images}) == len(glyphs.images)
    assert np.unique(glyphs.codepoints, return_counts=True)[1].min() >= 12
    # homoglyph groups keep their lowest code point: Latin A, not Greek Alpha / Cyrillic A
    assert ord("A") in glyphs.codepoints and ord("Α") not in glyphs.codepoints
    assert ord("А") not in glyphs.codepoints

    splits = {name: glyphs.split(name) for name in ("train", "val", "test")}
    chars = {name: set(split.codepoints.tolist()) for name, split in splits.items()}
    assert chars["train"].isdisjoint(chars["val"]) and chars["val"].isdisjoint(chars["test"])
    assert chars["train"].isdisjoint(chars["test"])
    assert chars["train"] | chars["val"] | chars["test"] == set(glyphs.codepoints.tolist())
    assert splits["val"].num_classes >= 200
    for split in splits.values():
        assert np.array_equal(np.unique(split.labels), np.arange(split.num_classes))
        assert np.array_equal(split.codepoints[split.labels], _codepoints_of(glyphs, split))
        assert split.images.shape[1:] == (32, 32)


def _codepoints_of(glyphs, split):
    """Reference: the class character of each image of a split, found by pixel lookup."""
    by_pixels = {
        image.tobytes(): cp for image, cp in zip(glyphs.images, glyphs.codepoints, strict=True)
    }
    return np.array([by_pixels[image.tobytes()] for image in split.images])


def test_split_is_stable_and_follows_fractions():
    codepoints = range(0x4E00, 0x4E00 + 20000)
    names = [split_of(cp) for cp in codepoints]
    for name, fraction in (("train", 0.45), ("val", 0.15), ("test", 0.40)):
        assert abs(names.count(name) / len(names) - fraction) < 0.01
    assert split_of(0x4E00, {"train": 1.0, "val": 0.0, "test": 0.0}) == "train"
    assert split_of(ord("A")) == split_of(ord("A"))


def test_cache_hit_and_key(tmp_path, monkeypatch):
    options = dict(fonts="matplotlib", chars="ABCDabcd1234", image_size=24, min_fonts=12)
    built = load_glyph_set(cache_dir=tmp_path, **options)
    files = list(tmp_path.glob("glyphs-*.npz"))
    assert len(files) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("the cached set should have been loaded")

    monkeypatch.setattr(glyph_module, "build_glyph_set", no_build)
    cached = load_glyph_set(cache_dir=tmp_path, **options)
    assert np.array_equal(cached.images, built.images)
    assert np.array_equal(cached.codepoints, built.codepoints)
    assert cached.font_names == built.font_names and cached.summary == built.summary

    faces = resolve_fonts("matplotlib")
    key = glyph_cache_key(faces, parse_chars("ABCDabcd1234"), 24, 12, 0.5)
    assert files[0].name == f"glyphs-{key}.npz"
    assert glyph_cache_key(faces, parse_chars("ABCDabcd1234"), 24, 11, 0.5) != key
    assert glyph_cache_key(faces, parse_chars("ABCDabcd1234"), 32, 12, 0.5) != key
    assert glyph_cache_key(faces[1:], parse_chars("ABCDabcd1234"), 24, 12, 0.5) != key


def test_no_class_left_is_an_error():
    with pytest.raises(ValueError, match="lower min_fonts or add fonts"):
        load_glyph_set(chars="ABC", min_fonts=40)


def test_parse_chars(tmp_path):
    assert parse_chars(None) is None
    assert parse_chars("cab a") == [97, 98, 99]  # spaces are no class
    assert parse_chars("U+41-U+43, U+0391") == [0x41, 0x42, 0x43, 0x391]
    assert len(parse_chars("U+4E00-U+9FFF")) == 0x9FFF - 0x4E00 + 1
    gb = parse_chars("gb2312")
    assert len(gb) == 3755 and gb[0] == ord("一") and ord("啊") in gb
    listing = tmp_path / "chars.txt"
    listing.write_text("xyz\nx", encoding="utf-8")
    assert parse_chars(str(listing)) == [ord("x"), ord("y"), ord("z")]
    with pytest.raises(ValueError, match="no visible character"):
        parse_chars(" \t")


def test_canonical_family_merges_regional_weight_and_series_variants():
    from memvir_pl.data.fonts import canonical_family

    assert canonical_family("Noto Sans CJK SC") == "Noto Sans CJK"
    assert canonical_family("AR PL UMing TW MBE") == "AR PL UMing"
    assert canonical_family("WenQuanYi Zen Hei Sharp") == "WenQuanYi Zen Hei"
    assert canonical_family("VL PGothic") == "VL Gothic"
    assert canonical_family("M PLUS 1p") == canonical_family("Mplus 2") == "M PLUS"
    assert canonical_family("YOzFontN") == "YOzFont"
    assert canonical_family("TW-Sung-Ext-B") == "TW-Sung"
    assert canonical_family("Source Han Serif") == "Source Han Serif"  # unknown names unchanged


def test_per_family_counts_design_families_and_keeps_the_plain_face():
    from memvir_pl.data.fonts import font_family

    faces = _faces("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSans-Oblique.ttf",
                   "DejaVuSerif.ttf", "STIXGeneral.ttf")
    assert [font_family(f) for f in faces] == ["DejaVu Sans"] * 3 + ["DejaVu Serif", "STIXGeneral"]
    chars = parse_chars("ABCDEFGHabcdefgh")
    by_face = build_glyph_set(faces, chars, image_size=20, min_fonts=5)
    by_family = build_glyph_set(faces, chars, image_size=20, min_fonts=3, per_family=1)
    assert by_face.summary["classes"] == by_family.summary["classes"] == len(chars)
    assert np.bincount(by_face.font_ids).tolist() == [len(chars)] * 5
    names = [by_family.font_names[i] for i in by_family.font_ids]
    # one image per family and character; the regular face stands for DejaVu Sans
    assert sorted(set(names)) == ["DejaVuSans.ttf", "DejaVuSerif.ttf", "STIXGeneral.ttf"]
    assert all((by_family.codepoints == cp).sum() == 3 for cp in chars)
    assert by_family.summary["family_capped_images_dropped"] == 2 * len(chars)
    two = build_glyph_set(faces, chars, image_size=20, min_fonts=3, per_family=2)
    assert all((two.codepoints == cp).sum() == 4 for cp in chars)  # regular + bold of DejaVu Sans
    # min_fonts counts families: three families cannot reach four
    assert build_glyph_set(faces, chars, image_size=20, min_fonts=4, per_family=1).summary["classes"] == 0
    with pytest.raises(ValueError, match="per_family must be >= 1"):
        build_glyph_set(faces, chars, per_family=0)


def test_per_family_is_part_of_the_cache_key_only_when_set():
    faces = _faces("DejaVuSans.ttf")
    plain = glyph_cache_key(faces, None, 32, 12, 0.5)
    assert glyph_cache_key(faces, None, 32, 12, 0.5, None) == plain
    assert glyph_cache_key(faces, None, 32, 12, 0.5, 1) != plain
    with pytest.raises(ValueError, match="distinct font families"):
        load_glyph_set(chars="ABC", min_fonts=14, per_family=1)  # matplotlib: 13 families
