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
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader

from memvir_pl.checkpoint import load_checkpoint, restore_run
from memvir_pl.config import CONFIG_DIR
from memvir_pl.data.splits import SPLITS
from memvir_pl.inference import embed_batches, resolve_device


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
                             datamodule.split(cfg.split).item_rows())
    print(f"{cfg.split}: {tuple(embeddings.shape)} embeddings of {int(labels.max()) + 1} classes -> "
          + ", ".join(str(p) for p in paths.values()))
    return paths


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="embed")
def main(cfg: DictConfig) -> None:
    embed_split(cfg)


if __name__ == "__main__":
    from memvir_pl.cli import run

    run("memvir-embed")
