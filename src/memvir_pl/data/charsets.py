"""Character sets for the glyph dataset: parsing the ``chars`` option."""

from __future__ import annotations

import os
import re
import unicodedata

#: Unicode general categories a glyph class may come from: letters, numbers, punctuation,
#: symbols. Marks, separators, controls, format, private-use and unassigned code points are out.
_RENDERABLE_CATEGORIES = frozenset("LNPS")
_RANGE = re.compile(r"U\+([0-9A-Fa-f]{1,6})(?:\s*-\s*U\+([0-9A-Fa-f]{1,6}))?")
_RANGES = re.compile(rf"\s*{_RANGE.pattern}(\s*,\s*{_RANGE.pattern})*\s*")


def is_renderable(codepoint: int) -> bool:
    """Whether a code point is a visible character that can name a glyph class."""
    return unicodedata.category(chr(codepoint))[0] in _RENDERABLE_CATEGORIES


def gb2312_level1() -> list[int]:
    """The 3,755 common Chinese characters of GB 2312 level 1 (rows 16-55), via Python's codec."""
    chars = []
    for row in range(16, 56):
        for cell in range(1, 95):
            try:
                chars.append(ord(bytes([0xA0 + row, 0xA0 + cell]).decode("gb2312")))
            except UnicodeDecodeError:
                continue
    return chars


_NAMED_SETS = {"gb2312": gb2312_level1}


def parse_chars(spec: str | None) -> list[int] | None:
    """Code points named by the ``chars`` option, sorted, renderable ones only.

    Args:
        spec: ``None`` (every character: the caller decides by font coverage); a named set
            (``"gb2312"``: common Chinese characters); Unicode ranges such as
            ``"U+4E00-U+9FFF, U+3041-U+3096"``; the path of a UTF-8 text file whose characters
            are taken; or a literal string of characters.

    Raises:
        ValueError: when the spec names no renderable character.
    """
    if spec is None:
        return None
    if spec in _NAMED_SETS:
        codepoints = set(_NAMED_SETS[spec]())
    elif _RANGES.fullmatch(spec):
        codepoints = set()
        for start, stop in _RANGE.findall(spec):
            codepoints.update(range(int(start, 16), int(stop or start, 16) + 1))
    elif os.path.isfile(spec):
        with open(spec, encoding="utf-8") as f:
            codepoints = {ord(c) for c in f.read()}
    else:
        codepoints = {ord(c) for c in spec}
    chosen = sorted(cp for cp in codepoints if is_renderable(cp))
    if not chosen:
        raise ValueError(
            f"chars={spec!r} names no visible character (letters, numbers, punctuation or "
            f"symbols). Expected a string, a file path, Unicode ranges like 'U+4E00-U+9FFF', "
            f"one of {sorted(_NAMED_SETS)}, or null for every character the fonts share."
        )
    return chosen
