"""Font discovery and character maps for the glyph dataset.

A *face* is one font inside a file: a ``.ttf``/``.otf`` file holds one, a ``.ttc``/``.otc``
collection holds several (addressed by ``index``).
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fontTools import agl
from fontTools.ttLib import TTCollection, TTFont

#: The text fonts bundled with matplotlib (DejaVu x14, STIXGeneral x4, STIXNonUni x4,
#: Computer Modern x7); the STIX size variants, cmex10 and LastResort hold no text glyphs.
MATPLOTLIB_FONTS: tuple[str, ...] = (
    *(
        f"DejaVu{family}{style}.ttf"
        for family in ("Sans", "SansMono", "Serif")
        for style in (
            ("", "-Bold", "-BoldItalic", "-Italic")
            if family == "Serif"
            else ("", "-Bold", "-BoldOblique", "-Oblique")
        )
    ),
    "DejaVuSansDisplay.ttf",
    "DejaVuSerifDisplay.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralBolIta.ttf",
    "STIXGeneralItalic.ttf",
    "STIXNonUni.ttf",
    "STIXNonUniBol.ttf",
    "STIXNonUniBolIta.ttf",
    "STIXNonUniIta.ttf",
    *(f"cm{name}10.ttf" for name in ("b", "mi", "r", "ss", "sy", "ti", "tt")),
)

_COLLECTION_SUFFIXES = (".ttc", ".otc")
#: A font whose cmap maps more than this fraction of code points to glyphs named after another
#: character uses a legacy (TeX) encoding; only its entries whose glyph name matches are kept.
_LEGACY_ENCODING_FRACTION = 0.1


@dataclass(frozen=True)
class FontFace:
    """One face of a font file; ``index`` selects the face inside a collection."""

    path: str
    index: int = 0

    @property
    def name(self) -> str:
        """File name, with ``#index`` for faces of a collection."""
        base = os.path.basename(self.path)
        return f"{base}#{self.index}" if self.path.lower().endswith(_COLLECTION_SUFFIXES) else base


def matplotlib_font_dir() -> Path:
    """The directory of matplotlib's bundled TrueType fonts."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _expand(pattern: str) -> list[str]:
    if pattern == "matplotlib":
        return [str(matplotlib_font_dir() / name) for name in MATPLOTLIB_FONTS]
    pattern = os.path.expanduser(pattern)
    return sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]


def _faces_of(path: str) -> list[FontFace]:
    if path.lower().endswith(_COLLECTION_SUFFIXES):
        return [FontFace(path, i) for i in range(len(TTCollection(path, lazy=True).fonts))]
    return [FontFace(path)]


def resolve_fonts(spec: str | Sequence[str]) -> list[FontFace]:
    """Font faces named by ``spec``, in a stable order without duplicates.

    Args:
        spec: the word ``"matplotlib"`` (the bundled text fonts), a file path, a glob
            (``**`` recurses), or a list of those. Collections expand to all their faces.

    Raises:
        FileNotFoundError: when a named file is missing or no file matches at all.
    """
    patterns = [spec] if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for pattern in patterns:
        found = _expand(str(pattern))
        missing = [p for p in found if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f"font file(s) not found: {missing[:5]} (from {pattern!r}). Give existing "
                "paths or globs in data.options.fonts, or 'matplotlib' for the bundled fonts."
            )
        paths.extend(p for p in found if p not in paths)
    if not paths:
        raise FileNotFoundError(
            f"no font file matches {patterns}. Install the fonts (e.g. Debian: apt-get install "
            "fonts-noto-cjk fonts-arphic-ukai fonts-wqy-zenhei) or change data.options.fonts."
        )
    return [face for path in paths for face in _faces_of(path)]


def _open(face: FontFace) -> TTFont:
    return TTFont(face.path, fontNumber=face.index, lazy=True)


def font_charmap(face: FontFace) -> dict[int, str]:
    """Code point -> glyph name of a face's best Unicode cmap.

    Fonts in a legacy TeX encoding (matplotlib's Computer Modern: ``{`` is an en dash in
    cmr10) keep only the entries whose glyph name (Adobe Glyph List) is the mapped character.
    """
    cmap = _open(face).getBestCmap() or {}
    named = {cp: agl.toUnicode(glyph) for cp, glyph in cmap.items()}
    mismatched = sum(name not in ("", chr(cp)) for cp, name in named.items())
    if mismatched > _LEGACY_ENCODING_FRACTION * max(len(cmap), 1):
        return {cp: glyph for cp, glyph in cmap.items() if named[cp] == chr(cp)}
    return dict(cmap)


# One design under several names: regional / encoding / proportional / code / extension variants
# and the YOzFont and kiloji style series (their ideographs are one design). Applied in order
# to the typographic family name; whitespace is collapsed after each.
FAMILY_ALIASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<![\w-])(SC|TC|JP|KR|HK|CN|TW|MBE|GB|Big5|Mono|Sharp)(?![\w-])"), ""),
    (re.compile(r"-(Ext-B|Plus)$|-ex$|2nd$"), ""),
    (re.compile(r"^YOz.*"), "YOzFont"),
    (re.compile(r"^kiloji.*"), "kiloji"),
    (re.compile(r"^HanaMin[AB]$"), "HanaMin"),
    (re.compile(r"^IPAP"), "IPA"),
    (re.compile(r"^VL PGothic$"), "VL Gothic"),
    (re.compile(r"^Komatuna P$"), "Komatuna"),
    (re.compile(r"^(M PLUS|Mplus).*"), "M PLUS"),
)
#: Subfamily names of a family's plain face, preferred when only some faces of a family are kept.
_REGULAR_STYLES = frozenset({"regular", "book", "normal", "roman", "medium", "w3", "w4"})


def canonical_family(name: str) -> str:
    """A family name with the variants of :data:`FAMILY_ALIASES` merged
    (``Noto Sans CJK SC`` -> ``Noto Sans CJK``, ``VL PGothic`` -> ``VL Gothic``)."""
    for pattern, replacement in FAMILY_ALIASES:
        name = " ".join(pattern.sub(replacement, name).split())
    return name


@functools.cache
def _design(face: FontFace) -> tuple[str, bool]:
    names = _open(face)["name"]
    family = canonical_family(str(names.getDebugName(16) or names.getDebugName(1) or Path(face.path).stem))
    style = str(names.getDebugName(17) or names.getDebugName(2) or "").strip().lower()
    return family, style in _REGULAR_STYLES


def font_family(face: FontFace) -> str:
    """The face's design family: its typographic family (name ID 16) or family (ID 1) through
    :func:`canonical_family`, so that a family's weights, regional, proportional and monospaced
    variants count once (``DejaVu Sans Mono Bold`` -> ``DejaVu Sans``)."""
    return _design(face)[0]


def is_regular_face(face: FontFace) -> bool:
    """Whether the face is its family's plain style (Regular, Book, Medium, ...)."""
    return _design(face)[1]
