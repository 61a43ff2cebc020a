"""The embedded ``glyphs`` benchmark: characters rendered from TrueType/OpenType fonts.

A class is a character, an instance is its rendering in one font face. Glyphs are drawn in a
fixed em box (each glyph keeps its size and vertical position relative to the em square and is
centred on its advance width; nothing is scaled to fit). The set is cleaned by rendering:

1. characters covered by fewer than ``min_fonts`` faces are not rendered;
2. blank renderings are dropped;
3. homoglyphs (characters whose renderings are identical in at least ``homoglyph_fraction`` of
   the faces that have both, e.g. Latin A / Greek Alpha / Cyrillic A) form groups, of which
   only the lowest code point is kept;
4. a rendering pixel-identical to an earlier one (lower code point, or same code point and
   earlier face) is dropped: no two images of the set are equal, so labels never disagree
   on identical images and no class holds copies;
5. with ``per_family`` set, at most that many renderings per design family are kept for a
   character (the family's plain face first, see :func:`memvir_pl.data.fonts.font_family`),
   so that a family with many weights cannot dominate;
6. classes left with fewer than ``min_fonts`` distinct renderings (distinct families with
   ``per_family``) are dropped.

``min_fonts`` counts faces, or design families when ``per_family`` is set (steps 1 and 6).

Characters are split into disjoint train / val / test sets by the SHA-1 of the character, so
a character's split never depends on the fonts or on the other characters.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFont, features

from memvir_pl.data.charsets import is_renderable, parse_chars
from memvir_pl.data.datasets import GlyphDataset
from memvir_pl.data.features import array_digest
from memvir_pl.data.fonts import FontFace, font_charmap, font_family, is_regular_face, resolve_fonts
from memvir_pl.data.splits import (
    DEFAULT_FRACTIONS,
    SPLITS,
    cache_key,
    load_dataclass,
    save_dataclass,
    split_of_key,
)

log = logging.getLogger(__name__)

#: Bump when rendering or cleaning changes, so stale caches are not reused.
GLYPH_SET_VERSION = 2
#: The em square is this fraction of the image side; the baseline sits at BASELINE_FRACTION of
#: the height from the top (room for accents above capitals and for descenders).
EM_FRACTION = 0.75
BASELINE_FRACTION = 0.78
#: A rendering whose brightest pixel is below this is blank.
_BLANK_LEVEL = 64


@dataclass(frozen=True)
class GlyphOptions:
    """The glyph set's options and their defaults (``data.options`` in ``conf/data/glyphs.yaml``,
    which a test keeps equal to these).

    Attributes:
        fonts: ``"matplotlib"`` (its bundled fonts), or font paths or globs (see :func:`resolve_fonts`).
        chars: character spec (see :func:`parse_chars`); ``None`` = every character the fonts share.
        min_fonts: faces (design families with ``per_family``) a character must be rendered in.
        homoglyph_fraction: share of common faces in which two characters must render identically
            to count as homoglyphs (one of them is dropped).
        per_family: ``None``: ``min_fonts`` counts faces; k: it counts design families, and at
            most k faces of a family are kept.
        fractions: {train, val, test} shares of the characters.
        cache_dir: folder of the built sets (``glyphs-<key>.npz``); ``None`` = always build.
    """

    fonts: str | Sequence[str] = "matplotlib"
    chars: str | None = None
    min_fonts: int = 12
    homoglyph_fraction: float = 0.5
    per_family: int | None = None
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    cache_dir: str | None = None


@dataclass(frozen=True)
class GlyphSplit:
    """One split of a glyph set.

    Attributes:
        images: (N, S, S) uint8, ink 255 on background 0.
        labels: (N,) int64 in [0, C), classes in code-point order.
        codepoints: (C,) int64, the character of each class.
        fonts: (N,) the font (face name) each image was rendered in.
    """

    images: np.ndarray
    labels: np.ndarray
    codepoints: np.ndarray
    fonts: tuple[str, ...] = ()
    is_query = None  # every item queries all others

    @property
    def num_classes(self) -> int:
        return len(self.codepoints)

    def dataset(self, transform: Callable[..., Any]) -> GlyphDataset:
        """The glyphs through a tensor preset (``glyph``), a whole batch per call."""
        return GlyphDataset(self, transform)

    def content_digest(self, root: str | None = None) -> str:
        """The pixels and labels (``root`` is not used)."""
        return array_digest(self.images, self.labels)

    def item_rows(self) -> list[dict[str, Any]]:
        """``index``, ``label``, ``codepoint`` (``U+XXXX``), ``char`` and ``font``."""
        codepoints = self.codepoints[self.labels]
        return [
            {"index": i, "label": int(label), "codepoint": f"U+{int(cp):04X}", "char": chr(int(cp)), "font": font}
            for i, (label, cp, font) in enumerate(zip(self.labels, codepoints, self.fonts, strict=True))
        ]


@dataclass(frozen=True)
class GlyphSet:
    """All renderings kept after cleaning, sorted by code point, then by face.

    Attributes:
        images: (N, S, S) uint8, ink 255 on background 0.
        codepoints: (N,) int64, the character (class) of each image.
        font_ids: (N,) int64 index into ``font_names``.
        font_names: face names (file name, ``#index`` inside a collection).
        summary: counts of what was kept and dropped, and the build time in seconds.
    """

    images: np.ndarray
    codepoints: np.ndarray
    font_ids: np.ndarray
    font_names: tuple[str, ...]
    summary: Mapping[str, float]

    def split(self, name: str, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> GlyphSplit:
        """The images of the characters that fall in split ``name`` ("train", "val", "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown glyph split {name!r}; expected one of {SPLITS}")
        classes = np.unique(self.codepoints)
        chosen = classes[[split_of(int(cp), fractions) == name for cp in classes]]
        keep = np.isin(self.codepoints, chosen)
        labels = np.searchsorted(chosen, self.codepoints[keep])
        fonts = tuple(self.font_names[int(i)] for i in self.font_ids[keep])
        return GlyphSplit(self.images[keep], labels.astype(np.int64), chosen.astype(np.int64), fonts)


def split_of(codepoint: int, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> str:
    """The split of a character, from the SHA-1 of its UTF-8 encoding (stable everywhere)."""
    return split_of_key(chr(codepoint), fractions)


def open_face(face: FontFace, image_size: int) -> ImageFont.FreeTypeFont:
    """The face as a PIL font whose em square is EM_FRACTION of ``image_size`` pixels."""
    return ImageFont.truetype(
        face.path,
        size=round(EM_FRACTION * image_size),
        index=face.index,
        layout_engine=ImageFont.Layout.BASIC,
    )


def render(font: ImageFont.FreeTypeFont, codepoints: Sequence[int], image_size: int) -> np.ndarray:
    """(len(codepoints), S, S) uint8 renderings in the fixed em box (ink 255 on 0).

    A glyph FreeType cannot render (e.g. "invalid opcode" in broken hinting code)
    stays blank, so it is dropped with the blank renderings; one warning per font.
    """
    baseline = BASELINE_FRACTION * image_size
    images = np.zeros((len(codepoints), image_size, image_size), dtype=np.uint8)
    failed = []
    for i, cp in enumerate(codepoints):
        canvas = Image.new("L", (image_size, image_size))
        try:
            left = (image_size - font.getlength(chr(cp))) / 2
            ImageDraw.Draw(canvas).text((left, baseline), chr(cp), font=font, fill=255, anchor="ls")
        except OSError as error:
            failed.append((cp, error))
            continue
        images[i] = np.asarray(canvas)
    if failed:
        cp, error = failed[0]
        log.warning("font %s: %d glyphs could not be rendered and count as blank (first: U+%04X: %s)",
                    getattr(font, "path", font), len(failed), cp, error)
    return images


def _usable_faces(
    faces: Sequence[FontFace], image_size: int
) -> list[tuple[FontFace, set[int], ImageFont.FreeTypeFont]]:
    """(face, code points, PIL font) of every face that fontTools and FreeType can read; the
    others (e.g. colour bitmap fonts matched by a glob) are skipped with a warning."""
    usable = []
    for face in faces:
        try:
            usable.append((face, set(font_charmap(face)), open_face(face, image_size)))
        except Exception as error:  # fontTools and FreeType raise many kinds
            log.warning("skipping font %s: %s: %s", face.path, type(error).__name__, error)
    return usable


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = self.parent.setdefault(x, x)
        if root != x:
            root = self.parent[x] = self.find(root)
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _homoglyph_losers(renders: dict[int, dict[int, bytes]], fraction: float) -> set[int]:
    """Characters to drop: all but the lowest code point of every homoglyph group."""
    same: Counter[tuple[int, int]] = Counter()
    for group in _identical_groups(renders):
        same.update(combinations(sorted(group), 2))
    groups = _UnionFind()
    for (a, b), count in same.items():
        if count >= fraction * len(renders[a].keys() & renders[b].keys()):
            groups.union(a, b)
    return {cp for cp in groups.parent if groups.find(cp) != cp}


def _identical_groups(renders: dict[int, dict[int, bytes]]) -> list[list[int]]:
    """Groups of characters rendered to exactly the same pixels in one face."""
    groups: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for cp, by_font in renders.items():
        for font_id, pixels in by_font.items():
            groups[font_id, pixels].append(cp)
    return [cps for cps in groups.values() if len(cps) > 1]


def _render_all(
    usable: Sequence[tuple[FontFace, set[int], ImageFont.FreeTypeFont]],
    codepoints: Sequence[int],
    image_size: int,
) -> dict[int, dict[int, bytes]]:
    """code point -> face id -> pixels (S*S bytes) of every non-blank rendering."""
    renders: dict[int, dict[int, bytes]] = {cp: {} for cp in codepoints}
    for font_id, (_, charmap, font) in enumerate(usable):
        covered = [cp for cp in codepoints if cp in charmap]
        for cp, image in zip(covered, render(font, covered, image_size), strict=True):
            if image.max() >= _BLANK_LEVEL:
                renders[cp][font_id] = image.tobytes()
    return renders


def _drop_identical(renders: dict[int, dict[int, bytes]]) -> tuple[int, int]:
    """Drop, in place, every rendering equal to an earlier one (by code point, then face).

    Returns:
        (dropped as equal to another class's image, dropped as equal to the same class's).
    """
    owner: dict[bytes, int] = {}
    cross_class = duplicates = 0
    for cp in sorted(renders):
        for font_id in sorted(renders[cp]):
            pixels = renders[cp][font_id]
            if pixels not in owner:
                owner[pixels] = cp
                continue
            if owner[pixels] == cp:
                duplicates += 1
            else:
                cross_class += 1
            del renders[cp][font_id]
    return cross_class, duplicates


def _cap_per_family(
    renders: dict[int, dict[int, bytes]], styles: Sequence[str], preference: Sequence[int],
    per_family: int,
) -> int:
    """Keep, in place, at most ``per_family`` renderings of each character per style group
    (faces in ``preference`` order). Returns the number of renderings dropped."""
    rank = {font_id: r for r, font_id in enumerate(preference)}
    dropped = 0
    for by_font in renders.values():
        kept: Counter[str] = Counter()
        for font_id in sorted(by_font, key=rank.__getitem__):
            if kept[styles[font_id]] >= per_family:
                del by_font[font_id]
                dropped += 1
            else:
                kept[styles[font_id]] += 1
    return dropped


def build_glyph_set(
    faces: Sequence[FontFace],
    chars: Sequence[int] | None = None,
    image_size: int = 32,
    min_fonts: int = GlyphOptions.min_fonts,
    homoglyph_fraction: float = GlyphOptions.homoglyph_fraction,
    per_family: int | None = GlyphOptions.per_family,
) -> GlyphSet:
    """Render and clean a glyph set (see the module docstring for the cleaning steps).

    Args:
        faces: font faces; their order decides which of two identical renderings is kept.
        chars: candidate code points; ``None`` = every renderable character in any face.
        image_size: side S of the square images, pixels.
        min_fonts: faces (design families with ``per_family``) a character must be covered
            by, and distinct renderings in distinct faces (families) it must keep.
        homoglyph_fraction: share of common faces in which two characters must render
            identically to count as homoglyphs.
        per_family: at most this many renderings of a character per design family;
            ``None`` = every face counts on its own.
    """
    if per_family is not None and per_family < 1:
        raise ValueError(f"per_family must be >= 1 or None (every face on its own), got {per_family}")
    start = time.perf_counter()
    usable = _usable_faces(faces, image_size)
    charmaps = [charmap for _, charmap, _ in usable]
    if chars is None:
        chars = sorted(cp for cp in set().union(*charmaps) if is_renderable(cp))
    # a style is a face, or a design family with per_family
    styles = [face.name + f"@{i}" if per_family is None else font_family(face)
              for i, (face, _, _) in enumerate(usable)]
    style_charmaps: dict[str, set[int]] = defaultdict(set)
    for style, charmap in zip(styles, charmaps, strict=True):
        style_charmaps[style] |= charmap
    coverage = Counter(cp for charmap in style_charmaps.values() for cp in charmap)
    selected = [cp for cp in chars if coverage[cp] >= min_fonts]

    renders = _render_all(usable, selected, image_size)
    rendered = sum(len(set(selected) & charmap) for charmap in charmaps)
    blank = rendered - sum(map(len, renders.values()))

    homoglyphs = _homoglyph_losers(renders, homoglyph_fraction)
    homoglyph_images = sum(len(renders.pop(cp)) for cp in homoglyphs)
    cross_class, duplicates = _drop_identical(renders)
    family_capped = 0
    if per_family is not None:
        preference = sorted(range(len(usable)), key=lambda i: (not is_regular_face(usable[i][0]), i))
        family_capped = _cap_per_family(renders, styles, preference, per_family)
    too_few = [cp for cp, by_font in renders.items()
               if len({styles[f] for f in by_font}) < min_fonts]
    too_few_images = sum(len(renders.pop(cp)) for cp in too_few)

    items = [(cp, f, px) for cp in sorted(renders) for f, px in sorted(renders[cp].items())]
    images = np.frombuffer(b"".join(px for _, _, px in items), dtype=np.uint8)
    summary = {
        "fonts": len(usable),
        "fonts_skipped": len(faces) - len(usable),
        "styles": len(style_charmaps),
        "candidates": len(selected),
        "rendered": rendered,
        "blank": blank,
        "homoglyph_chars_dropped": len(homoglyphs),
        "homoglyph_images_dropped": homoglyph_images,
        "cross_class_identical_dropped": cross_class,
        "duplicate_instances_dropped": duplicates,
        "family_capped_images_dropped": family_capped,
        "too_few_styles_chars_dropped": len(too_few),
        "too_few_styles_images_dropped": too_few_images,
        "classes": len(renders),
        "images": len(items),
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    log.info("glyph set built: %s", summary)
    return GlyphSet(
        images=images.reshape(len(items), image_size, image_size),
        codepoints=np.array([cp for cp, _, _ in items], dtype=np.int64),
        font_ids=np.array([f for _, f, _ in items], dtype=np.int64),
        font_names=tuple(face.name for face, _, _ in usable),
        summary=summary,
    )


def glyph_cache_key(
    faces: Sequence[FontFace],
    chars: Sequence[int] | None,
    image_size: int,
    min_fonts: int,
    homoglyph_fraction: float,
    per_family: int | None = None,
) -> str:
    """A hash of everything a glyph set depends on (fonts by file name and size, renderer)."""
    payload = {
        "version": GLYPH_SET_VERSION,
        "fonts": [(face.name, os.path.getsize(face.path)) for face in faces],
        "chars": None if chars is None else list(chars),
        "image_size": image_size,
        "min_fonts": min_fonts,
        "homoglyph_fraction": homoglyph_fraction,
        "renderer": (PIL.__version__, features.version("freetype2")),
    }
    if per_family is not None:  # absent otherwise, so face-level sets keep their cache files
        payload["per_family"] = per_family
    return cache_key(payload)


def load_glyph_set(
    fonts: str | Sequence[str] = GlyphOptions.fonts,
    chars: str | None = GlyphOptions.chars,
    image_size: int = 32,
    min_fonts: int = GlyphOptions.min_fonts,
    homoglyph_fraction: float = GlyphOptions.homoglyph_fraction,
    cache_dir: str | os.PathLike | None = GlyphOptions.cache_dir,
    per_family: int | None = GlyphOptions.per_family,
) -> GlyphSet:
    """The glyph set for these options, from ``cache_dir`` when built before.

    Args:
        fonts, chars, min_fonts, homoglyph_fraction, per_family, cache_dir: see :class:`GlyphOptions`.
        image_size: side S of the square images, pixels.
    """
    if image_size < 8:
        raise ValueError(f"glyph image_size must be >= 8 pixels, got {image_size}")
    faces = resolve_fonts(fonts)
    codepoints = parse_chars(chars)
    path = None
    if cache_dir is not None:
        key = glyph_cache_key(faces, codepoints, image_size, min_fonts, homoglyph_fraction,
                              per_family)
        path = Path(cache_dir) / f"glyphs-{key}.npz"
        if path.is_file():
            return load_dataclass(GlyphSet, path)
    glyphs = build_glyph_set(faces, codepoints, image_size, min_fonts, homoglyph_fraction,
                             per_family)
    if glyphs.summary["classes"] == 0:
        unit = "font renderings" if per_family is None else "font families"
        raise ValueError(
            f"no character is covered by >= {min_fonts} distinct {unit} "
            f"({len(faces)} faces, chars={chars!r}); lower min_fonts or add fonts"
        )
    if path is not None:
        save_dataclass(glyphs, path)
    return glyphs
