"""Search a folder of images with a trained checkpoint.

``python -m memvir_pl.search ckpt_path=... gallery=DIR query=IMAGE_OR_DIR k=5 [output=results.csv]
[save_grid=grid.png]`` embeds the gallery and the queries with the checkpoint's model and its
evaluation transform, finds each query's k most similar gallery images (cosine similarity,
exact search by :func:`memvir_pl.metrics.knn`: faiss when installed, torch otherwise) and
prints them, or writes them as CSV (``query, rank, gallery, similarity``) or JSON
(``[{"query", "results": [{"rank", "gallery", "similarity"}]}]``). ``save_grid`` (or
``--save-grid``) draws each query with its results as a PNG.

Embeddings are cached per checkpoint in ``cache_dir``, keyed by absolute file path, size and
modification time: unchanged files are not embedded again, changed ones are. A query that is
also in the gallery finds itself first.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from memvir_pl.config import CONFIG_DIR
from memvir_pl.data import UnreadableImageError, build_transform
from memvir_pl.data.datasets import read_rgb
from memvir_pl.data.records import IMAGE_SUFFIXES
from memvir_pl.data.transforms import preset_input
from memvir_pl.files import atomic_write
from memvir_pl.inference import embed_batches, load_model, resolve_device
from memvir_pl.metrics import knn

OUTPUT_SUFFIXES = (".csv", ".json")
CACHE_VERSION = 1


def list_images(path: str | Path, role: str) -> list[Path]:
    """The image files of ``path``: the file itself, or a folder's images (recursive, sorted).

    Files with other suffixes in a folder are ignored; hidden files and folders too.
    ``role`` ("gallery", "query") names the argument in errors.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{role} {path} does not exist; pass {role}=<an image or a folder of images>.")
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"{role} {path} is not an image file (suffix {path.suffix!r}); expected one of "
                f"{', '.join(IMAGE_SUFFIXES)}, or a folder of such images."
            )
        return [path.resolve()]
    images = sorted(
        p.resolve() for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not images:
        raise ValueError(
            f"{role} folder {path} contains no image files (looked for {', '.join(IMAGE_SUFFIXES)}, "
            "recursively); point it at a folder of images."
        )
    return images


class ImagePaths(Dataset):
    """Image files as the checkpoint's model input: ``{"image": (3, S, S) float}``.

    ``preset`` is the training data's transform preset: ``glyph`` reads images as grey
    (ink bright on dark, like the rendered glyphs), the others as RGB.
    """

    def __init__(self, paths: Sequence[Path], preset: str, image_size: int) -> None:
        self.paths = list(paths)
        self.grey = preset_input(preset) == "glyph"
        self.image_size = image_size
        self.transform = build_transform(preset, False, image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        path = self.paths[index]
        try:
            if not self.grey:
                return {"image": self.transform(read_rgb(str(path)))}
            with Image.open(path) as image:
                grey = image.convert("L").resize((self.image_size,) * 2, Image.Resampling.BILINEAR)
        except (UnreadableImageError, OSError, ValueError) as error:
            raise ValueError(
                f"{path} is not a readable image ({error}); remove it from the folder or convert it "
                "to PNG/JPEG."
            ) from error
        pixels = torch.from_numpy(np.asarray(grey, dtype=np.uint8).copy())
        return {"image": self.transform(pixels[None])[0]}


@dataclass
class Encoder:
    """A checkpoint's embedding network and input pipeline."""

    model: nn.Module
    preset: str
    image_size: int
    checkpoint_key: str
    device: torch.device
    batch_size: int = 64

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | Path, device: str = "auto", batch_size: int = 64) -> Encoder:
        """The model, transform preset and input size of a memvir_pl.train checkpoint."""
        loaded = load_model(ckpt_path)
        stat = Path(ckpt_path).stat()
        key = hashlib.sha1(f"{Path(ckpt_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        return cls(loaded.model, loaded.preset, loaded.image_size, key[:16], resolve_device(device), batch_size)

    def embed(self, paths: Sequence[Path], caption: str) -> Tensor:
        """Embeddings (N, D) float32 of the image files, with a progress bar."""
        loader = DataLoader(ImagePaths(paths, self.preset, self.image_size), batch_size=self.batch_size)
        return embed_batches(self.model, loader, self.device, progress=caption)[0]


class EmbeddingCache:
    """Embeddings of files by (absolute path, size, modification time), in one ``.npz`` per checkpoint."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, tuple[int, int, np.ndarray]] = {}
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) == CACHE_VERSION:
                    for name, size, mtime, row in zip(data["paths"], data["sizes"], data["mtimes"],
                                                      data["embeddings"], strict=True):
                        self.entries[str(name)] = (int(size), int(mtime), row)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns

    def get(self, path: Path) -> np.ndarray | None:
        """The cached (D,) embedding of ``path``, or ``None`` when absent or the file changed."""
        entry = self.entries.get(str(path))
        return entry[2] if entry is not None and entry[:2] == self._stamp(path) else None

    def put(self, path: Path, embedding: np.ndarray) -> None:
        self.entries[str(path)] = (*self._stamp(path), embedding)

    def save(self) -> None:
        """Write the cache (atomically) when it has a path and entries."""
        if self.path is None or not self.entries:
            return
        names = list(self.entries)
        arrays = {
            "version": np.array(CACHE_VERSION),
            "paths": np.array(names),
            "sizes": np.array([self.entries[n][0] for n in names], dtype=np.int64),
            "mtimes": np.array([self.entries[n][1] for n in names], dtype=np.int64),
            "embeddings": np.stack([self.entries[n][2] for n in names]).astype(np.float32),
        }
        atomic_write(self.path, lambda file: np.savez(file, **arrays))


def embed_files(encoder: Encoder, paths: Sequence[Path], cache: EmbeddingCache, caption: str) -> tuple[Tensor, int]:
    """Embeddings (N, D) of ``paths``, from ``cache`` where the file is unchanged; also how many were computed."""
    cached = {p: cache.get(p) for p in paths}
    missing = [p for p, row in cached.items() if row is None]
    if missing:
        for path, row in zip(missing, encoder.embed(missing, caption).numpy(), strict=True):
            cached[path] = row
            cache.put(path, row)
    return torch.from_numpy(np.stack([cached[p] for p in paths])), len(missing)


@dataclass
class SearchResult:
    """Each query's k nearest gallery images.

    queries: Q query files; gallery: G gallery files; similarities: (Q, k) cosine similarity,
    descending; indices: (Q, k) gallery rows; embedded: files embedded in this call (the
    others came from the cache).
    """

    queries: list[Path]
    gallery: list[Path]
    similarities: Tensor
    indices: Tensor
    embedded: int

    def rows(self) -> list[dict[str, Any]]:
        """One row per (query, rank): ``query, rank`` (1 = nearest), ``gallery``, ``similarity``."""
        return [
            {"query": str(query), "rank": rank + 1, "gallery": str(self.gallery[int(row)]),
             "similarity": float(similarity)}
            for query, rows, sims in zip(self.queries, self.indices, self.similarities, strict=True)
            for rank, (row, similarity) in enumerate(zip(rows, sims, strict=True))
        ]


def search_images(
    ckpt_path: str | Path,
    gallery: str | Path,
    query: str | Path,
    k: int = 5,
    cache_dir: str | Path | None = None,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = 64,
) -> SearchResult:
    """The k gallery images most similar to each query image (see the module docstring)."""
    gallery_paths = list_images(gallery, "gallery")
    query_paths = list_images(query, "query")
    if not isinstance(k, int) or not 1 <= k <= len(gallery_paths):
        raise ValueError(
            f"k={k!r} but the gallery {gallery} holds {len(gallery_paths)} images; use 1 <= k <= "
            f"{len(gallery_paths)}."
        )
    encoder = Encoder.from_checkpoint(ckpt_path, device, batch_size)
    cache = EmbeddingCache(None if cache_dir is None else Path(cache_dir) / f"search-{encoder.checkpoint_key}.npz")
    gallery_embeddings, embedded = embed_files(encoder, gallery_paths, cache, "embedding gallery")
    query_embeddings, embedded_queries = embed_files(encoder, query_paths, cache, "embedding queries")
    cache.save()
    found = knn(query_embeddings, gallery_embeddings, k, distance="cosine", backend=backend)
    return SearchResult(query_paths, gallery_paths, found.values, found.indices, embedded + embedded_queries)


def write_results(result: SearchResult, output: str | Path) -> Path:
    """Write the results as CSV or JSON, by the suffix of ``output``."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output {output} must end in {' or '.join(OUTPUT_SUFFIXES)}, got {suffix!r}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    if suffix == ".csv":
        with output.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["query", "rank", "gallery", "similarity"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        by_query: dict[str, list[dict[str, Any]]] = {str(q): [] for q in result.queries}
        for row in rows:
            by_query[row.pop("query")].append(row)
        output.write_text(json.dumps([{"query": q, "results": r} for q, r in by_query.items()], indent=2))
    return output


def format_results(result: SearchResult) -> str:
    """The results as text: each query, then its ranked gallery files with similarities."""
    lines = []
    for query, rows, sims in zip(result.queries, result.indices, result.similarities, strict=True):
        lines.append(f"query {query}")
        lines += [f"  {rank + 1:>3}  {float(sim):.4f}  {result.gallery[int(row)]}"
                  for rank, (row, sim) in enumerate(zip(rows, sims, strict=True))]
    return "\n".join(lines)


def save_grid(result: SearchResult, path: str | Path, thumbnail: int = 96) -> Path:
    """A PNG with one row per query: the query image, then its results with similarities."""
    from memvir_pl.viz import plot_retrieval_grid, save_figure

    def show(p: Path) -> np.ndarray:
        with Image.open(p) as image:
            image = image.convert("RGB")
            image.thumbnail((thumbnail, thumbnail))
            return np.asarray(image)

    figure = plot_retrieval_grid(
        [show(q) for q in result.queries],
        [[show(result.gallery[int(i)]) for i in rows] for rows in result.indices],
        scores=result.similarities.numpy(),
        query_titles=[q.name for q in result.queries],
    )
    return save_figure(figure, path)


def run(cfg: DictConfig) -> SearchResult:
    """The command: search, then print or write the results and the grid."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing, at INFO
    absolute = hydra.utils.to_absolute_path
    cache_dir = None if cfg.cache_dir is None else absolute(cfg.cache_dir)
    result = search_images(absolute(cfg.ckpt_path), absolute(cfg.gallery), absolute(cfg.query), cfg.k,
                           cache_dir, cfg.backend, cfg.device, cfg.batch_size)
    total = len(result.queries) + len(result.gallery)
    print(f"{total} images: {result.embedded} embedded, {total - result.embedded} from the cache")
    if cfg.output:
        print(f"results -> {write_results(result, absolute(cfg.output))}")
    else:
        print(format_results(result))
    if cfg.save_grid:
        print(f"grid -> {save_grid(result, absolute(cfg.save_grid))}")
    return result


def hydra_args(argv: Sequence[str]) -> list[str]:
    """Command-line arguments with ``--save-grid PATH`` / ``--save-grid=PATH`` as ``save_grid=PATH``."""
    args, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--save-grid":
            if not rest:
                raise SystemExit("--save-grid needs a PATH, e.g. --save-grid grid.png")
            arg = f"save_grid={rest.pop(0)}"
        elif arg.startswith("--save-grid="):
            arg = "save_grid=" + arg.split("=", 1)[1]
        args.append(arg)
    return args


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="search")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    from memvir_pl.cli import run

    run("memvir-search")
