"""The zero-shot row: retrieval with the backbone's pooled features, no training (a floor)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn


def pooled_features(model: nn.Module, images: Tensor) -> Tensor:
    """L2-normalised pooled backbone features (B, F) of images (B, 3, H, W): an
    :class:`memvir_pl.models.EmbeddingNet` without its (untrained) embedding layer. Inputs that
    are pooled features already (B, F), from ``data.cache_features``, are only normalised."""
    return F.normalize(images if images.ndim == 2 else model.features(images), dim=1)


def evaluate_pooled_features(cfg: DictConfig) -> dict[str, Any]:
    """Val and test metrics of the config's model's pooled features (its ImageNet weights
    when ``model.pretrained``), in the shape of ``train``'s metrics: ``best`` (the val metrics,
    epoch 0) and ``test``."""
    import hydra

    from memvir_pl.inference import evaluate
    from memvir_pl.metrics import RetrievalMetrics

    torch.manual_seed(cfg.seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    model = hydra.utils.instantiate(cfg.model).eval()
    if getattr(datamodule, "cache_features", False):
        datamodule.use_backbone(model)
    metrics: dict[str, Any] = {}
    for split, loader in (("val", datamodule.val_dataloader()), ("test", datamodule.test_dataloader())):
        metric = RetrievalMetrics(k=tuple(cfg.module.k), backend=cfg.module.metric_backend)
        values = evaluate(lambda images: pooled_features(model, images), loader, metric)
        metrics[split] = {f"{split}/{k}": float(v) for k, v in values.items()}
    return {"best": {"epoch": 0, **metrics["val"]}, "test": metrics["test"], "test_checkpoint": None}
