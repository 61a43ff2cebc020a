"""The ``emoji`` data set: one class per emoji, one image per design set that draws it.

Built from the package tarballs of :mod:`memvir_pl.data.emoji.sources` (read in place, never
downloaded here) in these steps:

1. every image of every design set is tied to an emoji (code-point file names, ``chars.json``,
   or an icon name looked up exactly, see :mod:`memvir_pl.data.emoji.names`); images of
   no emoji of the list, of an ambiguous name, or of an unknown name are dropped and counted;
2. skin-tone variants (U+1F3FB..U+1F3FF in the sequence) are dropped unless
   ``keep_skin_tones``, which keeps each as a class of its own;
3. an emoji drawn by two or more images of one design set (e.g. two icon names matching it)
   loses all of them in that set: which one is "the" design would be a guess;
4. emoji with fewer than ``min_designs`` images left are not rendered; the others are
   rasterised on white at ``render_size`` (see :mod:`memvir_pl.data.emoji.render`);
5. renderings pixel-identical to one of another emoji (OpenMoji's black set draws every
   country flag as one outline; Apple draws Bouvet Island as Norway) are dropped from every
   emoji that has them: such an image tells none of them apart;
6. within an emoji, a rendering near-identical to an earlier one (design-set order of
   ``SOURCES``) is dropped: near-identical = mean absolute difference of their 16 x 16 RGB
   box-filtered thumbnails below ``near_duplicate_mad`` (0-255 units);
7. emoji left with fewer than ``min_designs`` renderings are dropped;
8. emoji joined by a near-identical rendering (same rule as step 6) across classes, directly or
   through others, form one class group (e.g. "man" and "man: red hair" drawn alike by one
   set): the groups keep such renderings out of different splits.

Splits are class-disjoint and group-disjoint: every class of a group goes to the split of the
SHA-1 of the group's smallest class key (:func:`splits.split_of_key`), so a class alone in its
group is split by its own key.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL
import torch

from memvir_pl.data.datasets import ArrayImageDataset
from memvir_pl.data.emoji import sources as src
from memvir_pl.data.emoji.names import EmojiList, NameTable, canonical, is_skin_tone
from memvir_pl.data.emoji.render import iconify_svg, png_to_array, svg_to_array
from memvir_pl.data.features import array_digest
from memvir_pl.data.splits import (
    DEFAULT_FRACTIONS,
    SPLITS,
    cache_key,
    connected_groups,
    load_dataclass,
    save_dataclass,
    split_of_key,
)

log = logging.getLogger(__name__)

#: Bump when building or cleaning changes, so stale caches are not reused.
EMOJI_SET_VERSION = 2
THUMBNAIL = 16
#: Side of the coarse thumbnails whose MAD bounds the 16 x 16 one from below (a prefilter).
COARSE_THUMBNAIL = 4


@dataclass(frozen=True)
class EmojiOptions:
    """The emoji set's options and their defaults (``data.options`` in ``conf/data/emoji.yaml``,
    which a test keeps equal to these).

    Attributes:
        render_size: side S of the square renderings, pixels.
        min_designs: renderings (distinct design sets) an emoji must keep.
        keep_skin_tones: keep skin-tone variants, each as its own class.
        near_duplicate_mad: near-identical threshold, mean absolute difference of 16 x 16
            thumbnails in 0-255 units (within an emoji one is dropped; across emoji they share
            a split).
        fractions: {train, val, test} shares of the class groups.
        train_classes: keep only this many training classes, those with the most renderings
            (``None``: all).
        cache_dir: folder of the built sets (``emoji-<key>.npz``); ``None`` = always build.
    """

    render_size: int = 64
    min_designs: int = 7
    keep_skin_tones: bool = False
    near_duplicate_mad: float = 4.0
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    train_classes: int | None = None
    cache_dir: str | None = None

    #: The options that decide the built set (and its cache key); the others choose from it.
    BUILD_KEYS: ClassVar[tuple[str, ...]] = ("render_size", "min_designs", "keep_skin_tones", "near_duplicate_mad")

    def build_options(self) -> dict[str, Any]:
        """The options of :func:`build_emoji_set`, by name."""
        return {key: getattr(self, key) for key in self.BUILD_KEYS}


@dataclass(frozen=True)
class Candidate:
    """One image of one design set, tied to an emoji: SVG text or PNG bytes."""

    key: str
    design: int
    svg: str | None = None
    png: bytes | None = None

    def render(self, size: int) -> np.ndarray:
        """(size, size, 3) uint8 on white."""
        return svg_to_array(self.svg, size) if self.svg is not None else png_to_array(self.png, size)


@dataclass
class SourceStats:
    """What happened to one design set's images (counts of images)."""

    images: int = 0
    not_emoji: int = 0
    names_matched: int = 0
    names_ambiguous: int = 0
    names_unknown: int = 0
    skin_tone: int = 0
    conflicting: int = 0
    kept: int = 0
    unmatched_examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EmojiSplit:
    """One split of the emoji set.

    Attributes:
        images: (N, S, S, 3) uint8 RGB on white.
        labels: (N,) int64 in [0, C), classes in key order.
        classes: (C,) class keys (see :func:`names.canonical`).
        designs: (N,) the design set of each image.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    designs: tuple[str, ...]
    is_query = None  # every item queries all others

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def dataset(self, transform: Callable[..., Any]) -> ArrayImageDataset:
        """The renderings through a PIL preset."""
        return ArrayImageDataset(self.images, self.labels, transform)

    def content_digest(self, root: str | None = None) -> str:
        """The pixels and labels (``root`` is not used)."""
        return array_digest(self.images, self.labels)

    def item_rows(self) -> list[dict[str, Any]]:
        """``index``, ``label``, ``class`` (the class key) and ``design`` (the design set)."""
        return [
            {"index": i, "label": int(label), "class": self.classes[int(label)], "design": design}
            for i, (label, design) in enumerate(zip(self.labels, self.designs, strict=True))
        ]


@dataclass(frozen=True)
class EmojiSet:
    """All renderings kept, sorted by class key, then design-set order.

    Attributes:
        images: (N, S, S, 3) uint8 RGB on white.
        class_ids: (N,) int64 index into ``classes``.
        design_ids: (N,) int64 index into ``designs``.
        classes: class keys, sorted.
        labels: CLDR name of each class.
        designs: design-set names (``SOURCES`` order).
        class_groups: (C,) int64, the group of each class as the index of the group's first
            class (smallest key); a class with no near-identical rendering in another class
            is its own group.
        cross_class_pairs: (P, 2) int64 rows ``i < j`` into ``images``: renderings of two
            different classes that are near-identical (16 x 16 thumbnail MAD below the
            build's ``near_duplicate_mad``); they join the classes' groups.
        summary: counts of what was kept and dropped (``per_design``: :class:`SourceStats`
            fields per design set), of the class groups, and the build time in seconds.
    """

    images: np.ndarray
    class_ids: np.ndarray
    design_ids: np.ndarray
    classes: tuple[str, ...]
    labels: tuple[str, ...]
    designs: tuple[str, ...]
    class_groups: np.ndarray
    cross_class_pairs: np.ndarray
    summary: Mapping[str, Any]

    def class_splits(self, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> list[str]:
        """The split of every class (aligned with ``classes``): that of its group's smallest
        key, so near-identical renderings never sit in two splits."""
        return [split_of_key(self.classes[g], fractions) for g in self.class_groups.tolist()]

    def split(
        self,
        name: str,
        fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
        max_classes: int | None = None,
    ) -> EmojiSplit:
        """The images of the classes in split ``name`` ("train", "val", "test").

        Args:
            max_classes: keep only this many of the split's classes, those with the most
                renderings (ties: smaller key first); ``None`` = all.
        """
        if name not in SPLITS:
            raise ValueError(f"unknown emoji split {name!r}; expected one of {SPLITS}")
        counts = np.bincount(self.class_ids, minlength=len(self.classes))
        chosen = [c for c, s in enumerate(self.class_splits(fractions)) if s == name]
        if max_classes is not None:
            chosen = sorted(sorted(chosen, key=lambda c: -counts[c])[:max_classes])
        keep = np.isin(self.class_ids, chosen)
        labels = np.searchsorted(np.array(chosen, dtype=np.int64), self.class_ids[keep])
        return EmojiSplit(
            images=self.images[keep],
            labels=labels.astype(np.int64),
            classes=tuple(self.classes[c] for c in chosen),
            designs=tuple(self.designs[d] for d in self.design_ids[keep]),
        )


def load_emoji_list(root: Path) -> EmojiList:
    """The emoji list of the name-data package (emojibase-data ``en/data.json``)."""
    return EmojiList.from_emojibase(src.read_json(root / src.NAME_DATA.tarball, "en/data.json"))


def _datasource(source: src.Source, tarball: Path, stats: SourceStats) -> list[tuple[str, str, bytes]]:
    """(key, file, PNG bytes) of an emoji-datasource set, from ``emoji.json``."""
    folder = f"img/{source.variant}/64/"
    files = src.read_members(tarball, lambda n: n == "emoji.json" or n.startswith(folder))
    entries = json.loads(files["emoji.json"])
    flag = f"has_img_{source.variant}"
    out = []
    for entry in entries:
        for item in (entry, *entry.get("skin_variations", {}).values()):
            path = folder + item["image"]
            if item.get(flag) and path in files:
                out.append((canonical(item["unified"]), item["image"], files[path]))
    stats.images = len(out)
    return out


def _openmoji(source: src.Source, tarball: Path, stats: SourceStats) -> list[tuple[str, str, str]]:
    """(key, file, SVG text) of an openmoji folder (``color`` or ``black``)."""
    folder = f"{source.variant}/svg/"
    files = src.read_members(tarball, lambda n: n.startswith(folder) and n.endswith(".svg"))
    stats.images = len(files)
    return [(canonical(Path(name).stem), name, data.decode("utf-8")) for name, data in files.items()]


def _iconify(
    tarball: Path, names: NameTable, emoji: EmojiList, stats: SourceStats
) -> list[tuple[str, str, str]]:
    """(key, icon, SVG text) of an iconify set: by ``chars.json`` when it has one, else by
    looking up the icon's name and the names of its plain aliases (no flip, no rotation).
    Hidden icons (deprecated names of other icons) are skipped."""
    files = src.read_members(tarball, lambda n: n in ("icons.json", "chars.json"))
    icons = json.loads(files["icons.json"])
    chars = json.loads(files.get("chars.json", b"{}"))
    visible = {n: icon for n, icon in icons["icons"].items() if not icon.get("hidden")}
    stats.images = len(visible)
    by_chars: dict[str, set[str]] = defaultdict(set)
    for hexcode, icon_name in chars.items():
        by_chars[icon_name].add(canonical(hexcode))
    aliases: dict[str, list[str]] = defaultdict(list)
    for alias, spec in icons.get("aliases", {}).items():
        if set(spec) == {"parent"}:
            aliases[spec["parent"]].append(alias)
    width, height = icons.get("width", 16), icons.get("height", 16)
    out = []
    for icon_name, icon in visible.items():
        if chars:
            keys = by_chars.get(icon_name, set()) & emoji.labels.keys()
            if len(keys) != 1:
                stats.not_emoji += not keys
                stats.names_ambiguous += len(keys) > 1
                continue
            key = next(iter(keys))
        else:
            match = names.lookup([icon_name, *aliases[icon_name]])
            setattr(stats, f"names_{match.status}", getattr(stats, f"names_{match.status}") + 1)
            if match.key is None:
                if len(stats.unmatched_examples) < 8:
                    stats.unmatched_examples.append(icon_name)
                continue
            key = match.key
        out.append((key, icon_name, iconify_svg(icon, width, height)))
    return out


def collect_candidates(
    root: Path, sources: Sequence[src.Source], keep_skin_tones: bool
) -> tuple[list[Candidate], EmojiList, dict[str, SourceStats]]:
    """Steps 1-3 of the module docstring: every design set's images tied to one emoji each."""
    src.require_packages(root, sources)
    emoji = load_emoji_list(root)
    iconify_chars = [
        src.read_json(root / s.package.tarball, "chars.json")
        for s in sources if s.layout == "iconify"
    ]
    names = NameTable(emoji, iconify_chars)
    candidates: list[Candidate] = []
    stats: dict[str, SourceStats] = {}
    for design, source in enumerate(sources):
        st = stats[source.design] = SourceStats()
        tarball = root / source.package.tarball
        if source.layout == "datasource":
            items = _datasource(source, tarball, st)
        elif source.layout == "openmoji":
            items = _openmoji(source, tarball, st)
        elif source.layout == "iconify":
            items = _iconify(tarball, names, emoji, st)
        else:
            raise ValueError(f"unknown layout {source.layout!r} of {source.design}")
        kept = []
        for key, _, data in items:
            if key not in emoji.labels:
                st.not_emoji += 1
            elif is_skin_tone(key) and not keep_skin_tones:
                st.skin_tone += 1
            else:
                kept.append((key, data))
        per_key = Counter(key for key, _ in kept)
        for key, data in kept:
            if per_key[key] > 1:
                st.conflicting += 1
            elif isinstance(data, bytes):
                candidates.append(Candidate(key, design, png=data))
            else:
                candidates.append(Candidate(key, design, svg=data))
    return candidates, emoji, stats


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, 16, 16, 3) float32 box-filtered thumbnails (S divisible by
    16, else a nearest crop to a multiple of 16 first)."""
    n, s = images.shape[:2]
    cell = s // THUMBNAIL
    x = images[:, : cell * THUMBNAIL, : cell * THUMBNAIL].astype(np.float32)
    return x.reshape(n, THUMBNAIL, cell, THUMBNAIL, cell, 3).mean(axis=(2, 4))


def drop_near_duplicates(thumbs: np.ndarray, threshold: float) -> np.ndarray:
    """(M,) bool: keep, for M renderings of one class in preference order; a rendering is
    dropped when its thumbnail's mean absolute difference to an earlier kept one is
    < ``threshold``."""
    keep = np.ones(len(thumbs), dtype=bool)
    for i in range(1, len(thumbs)):
        kept = thumbs[:i][keep[:i]]
        if len(kept) and np.abs(kept - thumbs[i]).mean(axis=(1, 2, 3)).min() < threshold:
            keep[i] = False
    return keep


def near_identical_pairs(thumbs: np.ndarray, threshold: float, chunk: int = 1024) -> np.ndarray:
    """All near-identical pairs among ``thumbs``, the rule of :func:`drop_near_duplicates`.

    Args:
        thumbs: (N, 16, 16, 3) float32 thumbnails (:func:`thumbnails`), 0-255.
        threshold: a pair is near-identical when the mean absolute difference of its
            thumbnails is < ``threshold`` (0-255 units).
        chunk: rows compared at once in the prefilter, which holds a (chunk, N) block of
            float32 distances: ~4 * chunk * N bytes.

    Returns:
        (P, 2) int64 index pairs ``i < j``, sorted.

    The all-pairs search runs on 4 x 4 box-filtered thumbnails (48 values each): their MAD is a
    lower bound of the 16 x 16 one (the mean of a block's absolute differences is at least the
    absolute difference of the block's means), so only pairs under the threshold there can be
    near-identical; the exact 16 x 16 MAD is then computed for those pairs only.
    """
    n = len(thumbs)
    cell = THUMBNAIL // COARSE_THUMBNAIL
    coarse = thumbs.reshape(n, COARSE_THUMBNAIL, cell, COARSE_THUMBNAIL, cell, -1).mean(axis=(2, 4))
    coarse = torch.from_numpy(np.ascontiguousarray(coarse.reshape(n, -1), dtype=np.float32))
    # summed rather than averaged (cdist), with a margin so float32 rounding loses no pair
    bound = (threshold * (1 + 1e-5) + 1e-3) * coarse.shape[1]
    found = [np.zeros((0, 2), np.int64)]
    for start in range(0, n, chunk):
        near = torch.cdist(coarse[start:start + chunk], coarse[start:], p=1) < bound
        i, j = torch.nonzero(torch.triu(near, diagonal=1), as_tuple=True)  # j > i, once each
        candidates = torch.stack([i + start, j + start], dim=1).numpy().astype(np.int64)
        for s in range(0, len(candidates), 8192):
            batch = candidates[s:s + 8192]
            mad = np.abs(thumbs[batch[:, 0]] - thumbs[batch[:, 1]]).mean(axis=(1, 2, 3))
            found.append(batch[mad < threshold])
    pairs = np.concatenate(found)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def build_emoji_set(
    root: str | os.PathLike,
    render_size: int = EmojiOptions.render_size,
    min_designs: int = EmojiOptions.min_designs,
    keep_skin_tones: bool = EmojiOptions.keep_skin_tones,
    near_duplicate_mad: float = EmojiOptions.near_duplicate_mad,
    sources: Sequence[src.Source] = src.SOURCES,
) -> EmojiSet:
    """Build the emoji set from the package tarballs in ``root`` (module docstring, steps 1-7).

    Args:
        root: folder of the ``npm pack`` tarballs (see :func:`sources.fetch`).
        render_size: side S of the square renderings, pixels.
        min_designs: renderings (distinct design sets) an emoji must keep.
        keep_skin_tones: keep skin-tone variants, each as its own class.
        near_duplicate_mad: near-identical threshold, mean absolute difference of 16 x 16
            thumbnails in 0-255 units.
        sources: the design sets, in preference order (the first of two near-identical
            renderings is kept).

    Classes sharing a near-identical rendering are grouped (``EmojiSet.class_groups``, step 8);
    the summary counts the groups of more than one class, the classes in them, and the
    renderings with a near-identical rendering in another class.
    """
    if render_size < THUMBNAIL:
        raise ValueError(f"emoji render_size must be >= {THUMBNAIL} pixels, got {render_size}")
    start = time.perf_counter()
    root = Path(root)
    candidates, emoji, stats = collect_candidates(root, sources, keep_skin_tones)
    designs_of = Counter(c.key for c in candidates)
    todo = sorted((c for c in candidates if designs_of[c.key] >= min_designs),
                  key=lambda c: (c.key, c.design))
    rendered = np.stack([c.render(render_size) for c in todo]) if todo else np.zeros(
        (0, render_size, render_size, 3), np.uint8)

    owners: dict[bytes, set[str]] = defaultdict(set)
    for i, c in enumerate(todo):
        owners[rendered[i].tobytes()].add(c.key)
    keep = np.array([len(owners[rendered[i].tobytes()]) == 1 for i in range(len(todo))], dtype=bool)
    cross_class = int((~keep).sum())

    thumbs = thumbnails(rendered)
    by_key: dict[str, list[int]] = defaultdict(list)
    for i in np.flatnonzero(keep):
        by_key[todo[i].key].append(int(i))
    near_dups = 0
    for rows in by_key.values():
        kept = drop_near_duplicates(thumbs[rows], near_duplicate_mad)
        keep[np.array(rows)[~kept]] = False
        near_dups += int((~kept).sum())
    final = defaultdict(list)
    for i in np.flatnonzero(keep):
        final[todo[i].key].append(int(i))
    too_few = [k for k, rows in final.items() if len(rows) < min_designs]
    for k in too_few:
        del final[k]

    classes = tuple(sorted(final))
    rows = [i for k in classes for i in final[k]]
    for i in rows:
        stats[sources[todo[i].design].design].kept += 1
    class_index = {k: c for c, k in enumerate(classes)}
    class_ids = np.array([class_index[todo[i].key] for i in rows], dtype=np.int64)

    group_start = time.perf_counter()
    pairs = near_identical_pairs(thumbs[rows], near_duplicate_mad)
    pairs = pairs[class_ids[pairs[:, 0]] != class_ids[pairs[:, 1]]]
    groups = connected_groups(len(classes), class_ids[pairs])
    sizes = np.bincount(groups, minlength=len(classes))
    log.info("%d near-identical pairs across classes found in %.1f s", len(pairs),
             time.perf_counter() - group_start)
    summary = {
        "designs": len(sources),
        "candidates": len(candidates),
        "emoji_with_candidates": len(designs_of),
        "rendered": len(todo),
        "cross_class_identical_dropped": cross_class,
        "near_duplicates_dropped": near_dups,
        "too_few_designs_classes_dropped": len(too_few) + sum(
            n < min_designs for n in designs_of.values()),
        "classes": len(classes),
        "images": len(rows),
        "class_groups_joined": int((sizes > 1).sum()),
        "classes_in_joined_groups": int(sizes[sizes > 1].sum()),
        "renderings_near_identical_across_classes": len(np.unique(pairs)),
        "build_seconds": round(time.perf_counter() - start, 2),
        "per_design": {name: vars(st) for name, st in stats.items()},
    }
    log.info("emoji set built: %s", {k: v for k, v in summary.items() if k != "per_design"})
    return EmojiSet(
        images=rendered[rows] if rows else rendered[:0],
        class_ids=class_ids,
        design_ids=np.array([todo[i].design for i in rows], dtype=np.int64),
        classes=classes,
        labels=tuple(emoji.labels[k] for k in classes),
        designs=tuple(s.design for s in sources),
        class_groups=groups,
        cross_class_pairs=pairs,
        summary=summary,
    )


def emoji_cache_key(root: Path, sources: Sequence[src.Source], options: Mapping[str, Any]) -> str:
    """A hash of everything an emoji set depends on: tarballs (name, size), options, renderers."""
    return cache_key({
        "version": EMOJI_SET_VERSION,
        "tarballs": [(p.tarball, (root / p.tarball).stat().st_size) for p in src.packages(sources)],
        "designs": [s.design for s in sources],
        "options": dict(options),
        "renderer": (importlib.metadata.version("resvg-py"), PIL.__version__),
    })


def load_emoji_set(
    root: str | os.PathLike,
    render_size: int = EmojiOptions.render_size,
    min_designs: int = EmojiOptions.min_designs,
    keep_skin_tones: bool = EmojiOptions.keep_skin_tones,
    near_duplicate_mad: float = EmojiOptions.near_duplicate_mad,
    cache_dir: str | os.PathLike | None = EmojiOptions.cache_dir,
) -> EmojiSet:
    """The emoji set for these options, from ``cache_dir`` when built before (arguments: see
    :func:`build_emoji_set`; ``cache_dir`` holds ``emoji-<key>.npz`` files, ``None`` = always
    build). Raises FileNotFoundError naming the missing tarballs and the fetch command."""
    root = Path(root)
    src.require_packages(root)
    options = {"render_size": render_size, "min_designs": min_designs,
               "keep_skin_tones": keep_skin_tones, "near_duplicate_mad": near_duplicate_mad}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"emoji-{emoji_cache_key(root, src.SOURCES, options)}.npz"
        if path.is_file():
            return load_dataclass(EmojiSet, path)
    emoji = build_emoji_set(root, **options)
    if not emoji.classes:
        raise ValueError(f"no emoji has >= {min_designs} distinct renderings in {root}; "
                         "lower min_designs")
    if path is not None:
        save_dataclass(emoji, path)
    return emoji
