"""The glyph data report (``--data-report DATA``): what a glyph set of conf/data/DATA.yaml holds."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path


def data_report(data: str, out_dir: Path, cache_dir: Path, command: str) -> Path:
    """``glyphs_<data>_data.md``: faces, design families, classes and images per split, and the
    images each family contributes."""
    from omegaconf import OmegaConf

    from memvir_pl.config import CONFIG_DIR
    from memvir_pl.data.fonts import font_family, resolve_fonts
    from memvir_pl.data.glyphs import load_glyph_set, split_of

    options = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "data" / "glyphs.yaml").options,
                              OmegaConf.load(CONFIG_DIR / "data" / f"{data}.yaml").get("options", {}))
    fonts = OmegaConf.to_container(options.fonts)
    start = time.perf_counter()
    glyphs = load_glyph_set(fonts, options.chars, 32, options.min_fonts, options.homoglyph_fraction,
                            cache_dir=cache_dir, per_family=options.per_family)
    seconds = time.perf_counter() - start
    faces = {face.name: face for face in resolve_fonts(fonts)}
    families = [font_family(faces[n]) for n in glyphs.font_names]
    per_class: dict[int, set[str]] = {}
    images_of: dict[str, int] = dict.fromkeys(families, 0)
    for cp, font_id in zip(glyphs.codepoints.tolist(), glyphs.font_ids.tolist(), strict=True):
        per_class.setdefault(cp, set()).add(families[font_id])
        images_of[families[font_id]] += 1
    fractions = dict(options.fractions)
    split = {cp: split_of(cp, fractions) for cp in per_class}
    split_classes = Counter(split.values())
    split_images = Counter(split[cp] for cp in glyphs.codepoints.tolist())
    family_counts = sorted(len(f) for f in per_class.values())
    unit = "faces" if options.per_family is None else f"design families, <= {options.per_family} per family"
    lines = [
        f"# Glyph data set `{data}`", "", f"Command: `{command}`", "",
        f"Fonts: `{fonts}`, chars `{options.chars}`, min_fonts {options.min_fonts} ({unit}).", "",
        f"- faces read: {glyphs.summary['fonts']} (skipped {glyphs.summary['fonts_skipped']}), "
        f"in {len(set(families))} design families ({sum(n > 0 for n in images_of.values())} with"
        " images; weights and the variants of memvir_pl.data.fonts.FAMILY_ALIASES merged)",
        f"- classes: {len(per_class)}; images: {len(glyphs.codepoints)}",
        f"- families per class: min {family_counts[0]}, median {family_counts[len(family_counts) // 2]}, "
        f"max {family_counts[-1]}",
        "- classes / images per split: " + ", ".join(
            f"{s} {split_classes[s]} / {split_images[s]}" for s in ("train", "val", "test")),
        f"- load/build time here: {seconds:.0f} s (builder summary: {glyphs.summary})",
        "", "| family | faces | images |", "|---|---|---|",
        *(f"| {fam} | {families.count(fam)} | {images_of[fam]} |" for fam in sorted(set(families))
          if images_of[fam]), "",
    ]
    path = out_dir / f"glyphs_{data}_data.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
