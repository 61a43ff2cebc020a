"""The ``emoji`` data set: one class per emoji, its images drawn by many design sets.

``python -m memvir_pl.data.emoji fetch`` packs the npm packages into ``data/emoji/packages``;
``build`` renders and caches the set. The data report and contact sheet are the benchmark's:
``python benchmarks/quality.py --data-report emoji``.
"""

from memvir_pl.data.emoji.build import (
    EmojiOptions,
    EmojiSet,
    EmojiSplit,
    build_emoji_set,
    load_emoji_set,
)
from memvir_pl.data.emoji.sources import FETCH_COMMAND, SOURCES, fetch, require_packages

__all__ = [
    "FETCH_COMMAND",
    "SOURCES",
    "EmojiOptions",
    "EmojiSet",
    "EmojiSplit",
    "build_emoji_set",
    "fetch",
    "load_emoji_set",
    "require_packages",
]
