"""The ``emoji`` data set: one class per emoji, its images drawn by many design sets.

``python -m memvir_pl.data.emoji fetch`` packs the npm packages into ``data/emoji/packages``;
``build`` renders and caches the set; ``report`` writes the data report and contact sheet.
"""

from memvir_pl.data.emoji.build import EmojiSet, EmojiSplit, build_emoji_set, load_emoji_set
from memvir_pl.data.emoji.report import data_report
from memvir_pl.data.emoji.sources import FETCH_COMMAND, SOURCES, fetch, require_packages

__all__ = [
    "FETCH_COMMAND",
    "SOURCES",
    "EmojiSet",
    "EmojiSplit",
    "build_emoji_set",
    "data_report",
    "fetch",
    "load_emoji_set",
    "require_packages",
]
