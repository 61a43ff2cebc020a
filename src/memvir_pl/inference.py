"""Inference: a checkpoint's embedding network and its input settings, embeddings of batches, and
the one loop that feeds a retrieval metric.

Everything that embeds images after training goes through here: the module's validation and test
steps (:func:`update_metric`), :class:`memvir_pl.extensions.split_eval.SplitEvaluation` and the benchmark's
zero-shot row (:func:`evaluate`), ``memvir_pl.embed``, ``memvir_pl.search`` and the retrieval grid of
:class:`~memvir_pl.extensions.figures.FigureLogging` (:func:`embed_batches`, :func:`load_model`). Loading a model reads only the checkpoint: no data
set, no datamodule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from tqdm.auto import tqdm

from memvir_pl.checkpoint import load_checkpoint, saved_config

if TYPE_CHECKING:
    from memvir_pl.metrics import RetrievalMetrics

Batch = Mapping[str, Tensor]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; any other value is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint's embedding network (eval mode, CPU) and what its input must look like.

    Attributes:
        cfg: the run's config (pretrained-weight loading off).
        model: images (B, 3, S, S) -> L2-normalised embeddings (B, D).
        preset: the evaluation transform preset of its data (``glyph``, ``bninception``, ...).
        image_size: the input side S in pixels.
    """

    cfg: DictConfig
    model: nn.Module
    preset: str
    image_size: int


def load_model(ckpt_path: str | Path) -> LoadedModel:
    """The embedding network and input settings of a ``memvir_pl.train`` checkpoint.

    Only ``cfg.model`` is built, so a checkpoint trained on a data set that is not on this
    machine still embeds new images.
    """
    # imported here: it loads the data package, which DMLModule (a user of this module) does not need
    from memvir_pl.data.transforms import input_settings

    checkpoint = load_checkpoint(ckpt_path)
    cfg = saved_config(checkpoint)
    model = hydra.utils.instantiate(cfg.model)
    prefix = "model."
    model.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    preset, image_size = input_settings(cfg.data.dataset, cfg.data.get("transform"), cfg.data.get("image_size"))
    return LoadedModel(cfg, model.eval(), preset, image_size)


@torch.no_grad()
def embed_batches(
    model: nn.Module,
    batches: Iterable[Batch],
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


def update_metric(metric: RetrievalMetrics, embeddings: Tensor, batch: Batch) -> None:
    """Add a batch's embeddings (B, D) to ``metric``, with the batch's ``label`` (B,), ``index`` (B,)
    (the rows' dataset positions) and, on query/gallery splits, ``is_query`` (B,)."""
    metric.update(embeddings.float(), batch["label"], indexes=batch["index"], is_query=batch.get("is_query"))


def evaluate(
    embed: Callable[[Tensor], Tensor],
    batches: Iterable[Batch],
    metric: RetrievalMetrics,
    to_device: Callable[[Batch], Batch] | None = None,
) -> dict[str, Tensor]:
    """The retrieval metrics of a whole split: ``metric`` is reset, fed ``embed(batch["image"])``
    (B, D) of every batch (under ``torch.inference_mode``) and computed.

    Args:
        embed: inputs (B, ...) -> embeddings (B, D), e.g. a model in eval mode.
        batches: dicts with ``image``, ``label``, ``index`` and optionally ``is_query``.
        metric: the metric to fill; its K values and backend decide what is computed.
        to_device: moves a batch to where ``embed`` runs (default: leaves it where it is).
    Returns:
        ``metric.compute()``: ``recall@K``, ``r_precision``, ``map@r`` … as 0-dim tensors.
    """
    metric.reset()
    with torch.inference_mode():
        for batch in batches:
            if to_device is not None:
                batch = to_device(batch)
            update_metric(metric, embed(batch["image"]), batch)
    return metric.compute()
