"""Emoji identities: canonical code-point keys, skin tones, and exact name look-up.

A class is one emoji of emojibase-data's list (Unicode's emoji, skin-tone variants included),
keyed by its code points in upper-case hex joined by ``-`` with the variation selectors
U+FE0F/U+FE0E removed (``"2764-200D-1F525"``): fully-qualified and unqualified spellings of
one emoji get one key, and no two emoji share one.

Icons known only by a name are looked up in three tables, each compared after
:func:`normalise_name` (lower case, letters and digits only):

1. the CLDR short name of every emoji (emojibase-data ``label``, e.g. "grinning face";
   "waving hand: light skin tone");
2. the Unicode character name of every single-code-point emoji (Python's ``unicodedata``,
   e.g. "POUTING FACE" = U+1F621, whose CLDR name is "enraged face");
3. the icon names of the iconify sets that have a ``chars.json`` (code point -> name).

A name that gives exactly one emoji over all tables is matched; one that gives several is
ambiguous and dropped, as is one found in no table. Nothing is guessed (no stemming, no
fuzzy match, no dropping of suffixes such as "-1").
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SKIN_TONES = frozenset(f"{cp:X}" for cp in range(0x1F3FB, 0x1F400))
_VARIATION_SELECTORS = frozenset({"FE0F", "FE0E"})


def canonical(hexcode: str) -> str:
    """The class key of a code-point sequence written as hex (any case, ``-`` or ``_``)."""
    parts = re.split(r"[-_\s]+", hexcode.strip().upper())
    return "-".join(f"{int(p, 16):X}" for p in parts if p and p not in _VARIATION_SELECTORS)


def is_skin_tone(key: str) -> bool:
    """Whether a class key holds a skin-tone modifier (U+1F3FB..U+1F3FF)."""
    return not SKIN_TONES.isdisjoint(key.split("-"))


def normalise_name(name: str) -> str:
    """Lower case, letters and digits only: "Woman’s boot" and "womans-boot" -> "womansboot"."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class EmojiList:
    """emojibase-data's emoji: class key -> CLDR label, every skin-tone variant included."""

    labels: Mapping[str, str]

    @classmethod
    def from_emojibase(cls, data: Iterable[Mapping]) -> EmojiList:
        """From emojibase-data's ``en/data.json`` (entries with ``hexcode``, ``label``, ``skins``)."""
        labels = {}
        for entry in data:
            for item in (entry, *entry.get("skins", ())):
                labels[canonical(item["hexcode"])] = item["label"]
        return cls(labels)


@dataclass(frozen=True)
class NameMatch:
    """The outcome of looking a name up: ``key`` when exactly one emoji matched."""

    key: str | None
    candidates: frozenset[str]

    @property
    def status(self) -> str:
        """``matched``, ``ambiguous`` (several emoji) or ``unknown`` (none)."""
        if self.key is not None:
            return "matched"
        return "ambiguous" if self.candidates else "unknown"


class NameTable:
    """Normalised name -> the emoji it names, over the tables of the module docstring."""

    def __init__(self, emoji: EmojiList, iconify_chars: Iterable[Mapping[str, str]] = ()) -> None:
        """
        Args:
            emoji: the emoji list (CLDR labels; its single code points give Unicode names).
            iconify_chars: ``chars.json`` contents (hex code points -> icon name) of iconify sets.
        """
        self._keys: dict[str, set[str]] = defaultdict(set)
        for key, label in emoji.labels.items():
            self._add(label, key)
            if "-" not in key:
                name = unicodedata.name(chr(int(key, 16)), "")
                if name:
                    self._add(name, key)
        for chars in iconify_chars:
            for hexcode, name in chars.items():
                key = canonical(hexcode)
                if key in emoji.labels:
                    self._add(name, key)

    def _add(self, name: str, key: str) -> None:
        self._keys[normalise_name(name)].add(key)

    def lookup(self, names: Iterable[str]) -> NameMatch:
        """The emoji all of ``names`` (an icon's name and its aliases') point to, if exactly one."""
        candidates = frozenset().union(*(self._keys.get(normalise_name(n), ()) for n in names))
        key = next(iter(candidates)) if len(candidates) == 1 else None
        return NameMatch(key, candidates)
