"""The emoji data report: licences, renderings per design set, classes per number of
renderings, splits and the class groups behind them, and a contact sheet of the openly
licensed sets only."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from memvir_pl.data.emoji import sources as src
from memvir_pl.data.emoji.build import EmojiOptions, EmojiSet, load_emoji_set
from memvir_pl.data.splits import DEFAULT_FRACTIONS, SPLITS, split_of_key

SHEET_ROWS = 16
LABEL_WIDTH = 150
HEADER_HEIGHT = 60


def licences(root: Path, sources: Sequence[src.Source] = src.SOURCES) -> dict[str, dict[str, str]]:
    """Per design set: ``package`` (name@version), ``package_licence`` (package.json),
    ``image_licence`` (the images', = package_licence unless the source states otherwise),
    ``attribution`` (the source's, else the iconify info.json or package.json author), ``open``."""
    out = {}
    for source in sources:
        tarball = root / source.package.tarball
        manifest = src.read_json(tarball, "package.json")
        author = manifest.get("author", "")
        if source.layout == "iconify":
            author = src.read_json(tarball, "info.json").get("author", author)
        if isinstance(author, Mapping):
            author = " ".join(str(author.get(k, "")) for k in ("name", "url")).strip()
        author = source.attribution or author
        package_licence = str(manifest.get("license", "unknown"))
        image_licence = source.image_licence or package_licence
        out[source.design] = {
            "package": source.package.spec,
            "package_licence": package_licence,
            "image_licence": image_licence,
            "note": source.licence_note,
            "attribution": str(author),
            "open": str(image_licence in src.OPEN_LICENCES),
        }
    return out


def sheet_classes(emoji: EmojiSet, open_designs: Sequence[int], rows: int) -> list[int]:
    """``rows`` classes spread over the class order, among those drawn by the most open sets."""
    drawn = Counter(c for c, d in zip(emoji.class_ids.tolist(), emoji.design_ids.tolist(),
                                      strict=True) if d in open_designs)
    best = max(drawn.values())
    pool = [c for c in range(len(emoji.classes)) if drawn[c] >= best - 1]
    picks = np.linspace(0, len(pool) - 1, num=min(rows, len(pool))).round().astype(int)
    return [pool[i] for i in sorted(set(picks.tolist()))]


def contact_sheet(emoji: EmojiSet, open_designs: Sequence[int], path: Path,
                  rows: int = SHEET_ROWS) -> Path:
    """PNG: rows = classes (CLDR name), columns = the open design sets; a blank cell where a
    set has no (kept) rendering. Only images of ``open_designs`` are drawn."""
    size = emoji.images.shape[1]
    classes = sheet_classes(emoji, open_designs, rows)
    where = {(c, d): i for i, (c, d) in enumerate(zip(emoji.class_ids.tolist(),
                                                      emoji.design_ids.tolist(), strict=True))}
    sheet = Image.new("RGB", (LABEL_WIDTH + size * len(open_designs),
                              HEADER_HEIGHT + size * len(classes)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for col, d in enumerate(open_designs):
        x = LABEL_WIDTH + col * size
        for line, part in enumerate(emoji.designs[d].split("-")[:4]):
            draw.text((x + 2, 2 + 14 * line), part, fill="black", font=font)
    for row, c in enumerate(classes):
        y = HEADER_HEIGHT + row * size
        draw.text((2, y + size // 2 - 6), emoji.labels[c][:24], fill="black", font=font)
        for col, d in enumerate(open_designs):
            if (c, d) in where:
                sheet.paste(Image.fromarray(emoji.images[where[c, d]]), (LABEL_WIDTH + col * size, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path


def near_identical_to_training(emoji: EmojiSet, class_splits: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Per evaluation split (val, test): (renderings, classes) of it that have a near-identical
    rendering (``emoji.cross_class_pairs``) in a training class, when the classes are split as
    ``class_splits`` (one split name per class, aligned with ``emoji.classes``)."""
    split_of_row = np.asarray(class_splits)[emoji.class_ids]
    rows: dict[str, set[int]] = {"val": set(), "test": set()}
    for i, j in emoji.cross_class_pairs.tolist():
        for row, other in ((i, j), (j, i)):
            if split_of_row[other] == "train" and split_of_row[row] in rows:
                rows[split_of_row[row]].add(row)
    return {name: (len(r), len({int(emoji.class_ids[i]) for i in r})) for name, r in rows.items()}


def _split_counts(class_splits: Sequence[str], counts: np.ndarray) -> str:
    """"train C / N, val C / N, test C / N": classes / images per split."""
    return ", ".join(
        f"{s} {list(class_splits).count(s)} / {int(counts[[c for c, x in enumerate(class_splits) if x == s]].sum())}"
        for s in SPLITS)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(v) for v in row) + " |" for row in rows),
    ]


def data_report(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    command: str = "",
    options: Mapping[str, Any] | None = None,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    few_train_classes: int = 100,
) -> str:
    """Markdown report of the emoji set built from the tarballs in ``root`` with ``options``
    (see :func:`load_emoji_set`), and its contact sheet ``emoji_contact_sheet.png`` in
    ``out_dir`` (open sets only); returns the markdown (the caller writes it)."""
    import time

    root, out_dir = Path(root), Path(out_dir)
    options = dict(options or {})
    start = time.perf_counter()
    emoji = load_emoji_set(root, cache_dir=cache_dir, **options)
    seconds = time.perf_counter() - start
    info = licences(root)
    summary = emoji.summary
    per_design = summary["per_design"]
    open_designs = [d for d, name in enumerate(emoji.designs) if info[name]["open"] == "True"]
    sheet = contact_sheet(emoji, open_designs, out_dir / "emoji_contact_sheet.png")

    counts = np.bincount(emoji.class_ids, minlength=len(emoji.classes))
    splits = emoji.class_splits(fractions)
    key_splits = [split_of_key(key, fractions) for key in emoji.classes]
    leaks = {"by class key alone": near_identical_to_training(emoji, key_splits),
             "by class group (used)": near_identical_to_training(emoji, splits)}
    members: dict[int, list[int]] = {}
    for c, g in enumerate(emoji.class_groups.tolist()):
        members.setdefault(g, []).append(c)
    largest = sorted((m for m in members.values() if len(m) > 1), key=lambda m: (-len(m), m[0]))
    few = emoji.split("train", fractions, few_train_classes)
    name_rows = [(name, st["images"], st["names_matched"], st["names_ambiguous"],
                  st["names_unknown"]) for name, st in per_design.items()
                 if st["names_matched"] + st["names_ambiguous"] + st["names_unknown"]]
    lines = [
        "# Emoji data set (`data=emoji`, `data=emoji_few`)", "",
        *([f"Command: `{command}`", ""] if command else []),
        f"Packages: `{root}` (fetch: `{src.FETCH_COMMAND}`). Options:"
        f" {({**EmojiOptions().build_options(), **options})} (k = min_designs; see `conf/data/emoji.yaml` and"
        " `memvir_pl.data.emoji.build`), split fractions"
        f" {dict(fractions)}.", "",
        f"- classes (emoji with >= k distinct renderings): **{len(emoji.classes)}**; images:"
        f" **{len(emoji.class_ids)}**",
        "- classes / images per split: " + _split_counts(splits, counts)
        + " (by class group, see below)",
        f"- `emoji_few` training split: {few.num_classes} classes / {len(few.labels)} images"
        f" (the {few_train_classes} training classes with the most renderings); val/test as"
        " `emoji`",
        f"- cleaning: {summary['candidates']} images tied to an emoji, {summary['rendered']}"
        f" rendered (emoji with >= k candidates), {summary['cross_class_identical_dropped']}"
        " renderings identical to another emoji's dropped (from all of them),"
        f" {summary['near_duplicates_dropped']}"
        f" near-identical within a class dropped, {summary['too_few_designs_classes_dropped']}"
        " emoji with < k renderings dropped",
        f"- build time: {summary['build_seconds']} s when built; load here {seconds:.0f} s", "",
        "## Class groups", "",
        "Two emoji with near-identical renderings (16 x 16 thumbnail MAD <"
        " `near_duplicate_mad`, the within-class rule) are one group, directly or through"
        " others; each group goes whole to the split of its smallest class key, so no"
        " rendering has a near-identical copy in another split.", "",
        f"- groups of 2+ classes: **{summary['class_groups_joined']}**, holding"
        f" {summary['classes_in_joined_groups']} classes; renderings with a near-identical"
        f" rendering in another class: {summary['renderings_near_identical_across_classes']}"
        f" ({len(emoji.cross_class_pairs)} pairs)",
        "- largest groups: " + "; ".join(
            f"{len(m)} classes ({', '.join(emoji.labels[c] for c in m[:5])}"
            + (" …)" if len(m) > 5 else ")") for m in largest[:5]),
        "- classes / images per split by class key alone (without groups): "
        + _split_counts(key_splits, counts), "",
        *_markdown_table(
            ["classes split", "val renderings (classes) near-identical to a training rendering",
             "test renderings (classes) near-identical to a training rendering"],
            [(name, f"{v['val'][0]} ({v['val'][1]})", f"{v['test'][0]} ({v['test'][1]})")
             for name, v in leaks.items()]),
        "",
        "## Design sets", "",
        "Image licence = the package.json `license` unless the package states otherwise"
        " (emoji-datasource: its README). Only sets with an open image licence appear in the"
        " contact sheet.", "",
        *_markdown_table(
            ["design", "package", "package.json licence", "image licence", "open", "images",
             "not an emoji", "skin tone", "conflicting", "kept"],
            [(name, info[name]["package"], info[name]["package_licence"],
              info[name]["image_licence"], "yes" if info[name]["open"] == "True" else "**no**",
              st["images"], st["not_emoji"] + st["names_ambiguous"] + st["names_unknown"],
              st["skin_tone"], st["conflicting"], st["kept"])
             for name, st in per_design.items()]),
        "",
        "`not an emoji` counts images not tied to exactly one emoji of emojibase-data's list"
        " (extra icons, ambiguous or unknown names); `conflicting`: an emoji drawn twice in one"
        " set (both dropped).", "",
        "## Icons matched by name", "",
        "Sets without `chars.json`: icon names looked up exactly in CLDR names, Unicode names"
        " and the other sets' `chars.json` (see `memvir_pl.data.emoji.names`); unmatched icons"
        " are dropped.", "",
        *_markdown_table(["design", "icons", "matched", "ambiguous", "unknown", "unmatched e.g."],
                         [(*row, ", ".join(per_design[row[0]]["unmatched_examples"][:5]))
                          for row in name_rows]),
        "",
        "## Classes per number of renderings", "",
        *_markdown_table(["renderings", "classes"],
                         sorted(Counter(counts.tolist()).items())),
        "",
        f"## Contact sheet: `{sheet.name}`", "",
        "Rows = classes, columns = the openly licensed design sets (a blank cell: that set has"
        " no kept rendering). Attribution:", "",
        *(f"- {emoji.designs[d]}: {info[emoji.designs[d]]['attribution']},"
          f" {info[emoji.designs[d]]['image_licence']} ({info[emoji.designs[d]]['package']})"
          for d in open_designs),
        "",
    ]
    return "\n".join(lines)
