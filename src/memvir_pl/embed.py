"""Embed a split with a trained checkpoint: ``python -m memvir_pl.embed ckpt_path=... split=test``.

Writes, in ``output_dir`` (default: the run directory):

- ``<split>_embeddings.npy``: (N, D) float32, L2-normalised as the model outputs them;
- ``<split>_labels.npy``: (N,) int64, the split's labels in [0, C_split);
- ``<split>_items.csv``: one row per item, in the same order: ``index, label`` and what the
  item is: ``codepoint, char, font`` for glyphs, ``class, design`` for emoji (the class key and
  the design set of the rendering), ``class, path[, is_query]`` for image files.

The model and data settings come from the checkpoint; ``data.*`` keys override its data config
(e.g. ``data.root=/datasets/CUB_200_2011`` on another machine). Every split is embedded with
the evaluation transform (no augmentation), the train split too.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from memvir_pl.checkpoint import load_checkpoint, restore_run
from memvir_pl.config import CONFIG_DIR
from memvir_pl.data import (
    DMLDataModule,
    GlyphSplit,
)
from memvir_pl.data.emoji.build import EmojiSplit

SPLITS = ("train", "val", "test")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; any other value is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def embed_batches(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    device: torch.device | str = "cpu",
    progress: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Embeddings of every batch, in order.

    Args:
        model: images (B, 3, H, W) -> embeddings (B, D); put in eval mode here.
        batches: dicts with ``image`` (B, 3, H, W) and optionally ``label`` (B,).
        device: where the model runs.
        progress: a progress-bar caption (on stderr); ``None`` shows none.
    Returns:
        embeddings (N, D) float32 and labels (N,) int64 on the CPU (labels ``None`` when the
        batches have none).
    """
    model.eval().to(device)
    embeddings, labels = [], []
    for batch in tqdm(batches, desc=progress, disable=progress is None, unit="batch"):
        embeddings.append(model(batch["image"].to(device)).float().cpu())
        if "label" in batch:
            labels.append(batch["label"].cpu())
    if not embeddings:
        raise ValueError("embed_batches got no batches; expected at least one image.")
    return torch.cat(embeddings), torch.cat(labels) if labels else None


def item_rows(datamodule: DMLDataModule, split: str) -> list[dict[str, Any]]:
    """What each item of ``split`` is, in dataset order (see the module docstring for columns)."""
    images = datamodule.split(split)
    if isinstance(images, GlyphSplit):
        codepoints = images.codepoints[images.labels]
        return [
            {"index": i, "label": int(label), "codepoint": f"U+{int(cp):04X}", "char": chr(int(cp)), "font": font}
            for i, (label, cp, font) in enumerate(zip(images.labels, codepoints, images.fonts, strict=True))
        ]
    if isinstance(images, EmojiSplit):
        return [
            {"index": i, "label": int(label), "class": images.classes[int(label)], "design": design}
            for i, (label, design) in enumerate(zip(images.labels, images.designs, strict=True))
        ]
    rows = [
        {"index": i, "label": int(label), "class": images.classes[int(label)], "path": path}
        for i, (label, path) in enumerate(zip(images.labels, images.paths, strict=True))
    ]
    if images.is_query is not None:
        for row, is_query in zip(rows, images.is_query, strict=True):
            row["is_query"] = bool(is_query)
    return rows


def write_embeddings(
    output_dir: str | Path, split: str, embeddings: Tensor, labels: Tensor, rows: list[dict[str, Any]]
) -> dict[str, Path]:
    """Write ``<split>_embeddings.npy``, ``<split>_labels.npy`` and ``<split>_items.csv``."""
    if not (len(embeddings) == len(labels) == len(rows)):
        raise ValueError(
            f"{len(embeddings)} embeddings, {len(labels)} labels and {len(rows)} item rows; "
            "expected one of each per item."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: output_dir / f"{split}_{name}" for name in ("embeddings.npy", "labels.npy", "items.csv")}
    np.save(paths["embeddings.npy"], embeddings.numpy().astype(np.float32))
    np.save(paths["labels.npy"], labels.numpy().astype(np.int64))
    with paths["items.csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["index", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return paths


def embed_split(cfg: DictConfig) -> dict[str, Path]:
    """Embed ``cfg.split`` with ``cfg.ckpt_path``; returns the written files by name."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {cfg.split!r}.")
    ckpt_path = hydra.utils.to_absolute_path(cfg.ckpt_path)
    _, datamodule, module = restore_run(load_checkpoint(ckpt_path), cfg.get("data"))
    loader = DataLoader(datamodule.split_dataset(cfg.split, train=False), batch_size=datamodule.eval_batch_size,
                        shuffle=False, num_workers=datamodule.num_workers)
    embeddings, labels = embed_batches(module.model, loader, resolve_device(cfg.device),
                                       progress=f"embedding {cfg.split}")
    assert labels is not None
    output_dir = cfg.output_dir or cfg.paths.output_dir
    paths = write_embeddings(hydra.utils.to_absolute_path(output_dir), cfg.split, embeddings, labels,
                             item_rows(datamodule, cfg.split))
    print(f"{cfg.split}: {tuple(embeddings.shape)} embeddings of {int(labels.max()) + 1} classes -> "
          + ", ".join(str(p) for p in paths.values()))
    return paths


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="embed")
def main(cfg: DictConfig) -> None:
    embed_split(cfg)


if __name__ == "__main__":
    from memvir_pl.cli import run

    run("memvir-embed")
