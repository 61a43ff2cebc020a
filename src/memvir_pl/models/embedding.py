"""EmbeddingNet: backbone -> global pooling -> Linear -> L2 normalisation."""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from memvir_pl.models.backbones import backbone_stages, build_backbone
from memvir_pl.models.pooling import GlobalPool

HEAD_INITS = ("default", "kaiming")


def batchnorm_layers(module: nn.Module) -> list[_BatchNorm]:
    """All BatchNorm layers (1d/2d/3d/Sync) inside ``module``."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def freeze_batchnorm(module: nn.Module) -> int:
    """Put every BatchNorm layer of ``module`` in eval mode (running statistics fixed).

    As the official ``--freeze_BN``: the statistics stop updating and normalisation uses the
    stored ones; the affine weight and bias still train. ``module.train()`` undoes it, so
    re-apply after each ``train()`` (``EmbeddingNet(freeze_bn=True)`` does this itself).

    Returns:
        The number of BatchNorm layers frozen.
    """
    layers = batchnorm_layers(module)
    for layer in layers:
        layer.eval()
    return len(layers)


class EmbeddingNet(nn.Module):
    """Images ``(B, C, H, W)`` -> embeddings ``(B, embedding_dim)``, unit L2 norm by default.

    Backbone feature map ``(B, F, h, w)`` -> pooling (``gap``, ``gmp`` or ``gap+gmp``) ->
    ``Linear(F, embedding_dim)`` -> L2 normalisation.

    Args:
        backbone: ``bninception``, ``resnet50``, ``efficientnet_lite0`` or ``small_cnn``.
        embedding_dim: D, the embedding size.
        pooling: ``gap``, ``gmp`` or ``gap+gmp`` (sum).
        pretrained: load the backbone's published ImageNet weights.
        weights: local state dict file for the backbone (wins over ``pretrained``).
        in_channels: image channels.
        normalize: L2-normalise the output.
        freeze_bn: keep every BatchNorm layer in eval mode, also after ``train()``.
        freeze_stages: k: the parameters of the backbone's first k stages (stem first, see
            ``stages()`` of ``efficientnet_lite0`` and ``resnet50``) get ``requires_grad=False``;
            the optimiser skips them and the backward pass stops before them. ``"all"``: the
            whole backbone (any backbone) is frozen and kept in eval mode (fixed BatchNorm
            statistics, no dropout), so only the head trains and the pooled features of an
            image never change: they can be computed once (``DMLDataModule(cache_features=True)``)
            and fed to :meth:`forward` as ``(B, F)``.
        init: the head's initialisation: ``"default"`` keeps ``nn.Linear``'s own (weight and
            bias U(±1/sqrt(F))), as the official MemVir code; ``"kaiming"`` draws the weight
            kaiming-normal (fan_out, std sqrt(2/embedding_dim)) with bias 0, as the
            Proxy-Anchor repository.
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        embedding_dim: int = 512,
        pooling: str = "gap",
        pretrained: bool = False,
        weights: str | os.PathLike[str] | None = None,
        in_channels: int = 3,
        normalize: bool = True,
        freeze_bn: bool = False,
        freeze_stages: int | Literal["all"] = 0,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if init not in HEAD_INITS:
            raise ValueError(
                f"EmbeddingNet: init must be one of {HEAD_INITS} (the embedding head's initialisation: "
                f"'default' = nn.Linear's own, official MemVir; 'kaiming' = Proxy-Anchor's), got {init!r}."
            )
        self.backbone = build_backbone(
            backbone, pretrained=pretrained, weights=weights, in_channels=in_channels
        )
        self.pool = GlobalPool(pooling)
        self.feature_dim: int = self.backbone.out_channels
        self.embedding_dim = embedding_dim
        self.embedding = nn.Linear(self.feature_dim, embedding_dim)
        if init == "kaiming":
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
            nn.init.zeros_(self.embedding.bias)
        self.normalize = normalize
        self.freeze_bn = freeze_bn
        if isinstance(freeze_stages, str) and freeze_stages != "all":
            raise ValueError(f"freeze_stages must be an integer number of stages or 'all', got {freeze_stages!r}")
        self.frozen_backbone = freeze_stages == "all"
        if self.frozen_backbone:
            self.backbone.requires_grad_(False)
        elif freeze_stages:
            stages = backbone_stages(self.backbone)
            if not 0 <= freeze_stages <= len(stages):
                raise ValueError(f"freeze_stages must be in [0, {len(stages)}] for backbone {backbone!r} "
                                 f"({len(stages)} stages), got {freeze_stages}")
            for stage in stages[:freeze_stages]:
                stage.requires_grad_(False)
        self.train()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> embeddings ``(B, embedding_dim)``.

        With a frozen backbone (``freeze_stages="all"``) the inputs may also be its pooled
        features ``(B, feature_dim)`` (:meth:`features` of the images): only the head runs.
        """
        if inputs.ndim == 2:
            if not self.frozen_backbone:
                raise ValueError(
                    f"EmbeddingNet got inputs of shape {tuple(inputs.shape)}: pooled features, which skip the "
                    "backbone; that is only right when the backbone is frozen (model.freeze_stages=all). "
                    "Feed images (B, C, H, W), or freeze the backbone."
                )
            if inputs.shape[1] != self.feature_dim:
                raise ValueError(
                    f"EmbeddingNet: pooled features must have {self.feature_dim} columns (the backbone's "
                    f"output), got {tuple(inputs.shape)}; were they computed with another backbone?"
                )
            return self.head(inputs)
        return self.head(self.features(inputs))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> pooled backbone features ``(B, feature_dim)``."""
        return self.pool(self.backbone(images))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, feature_dim)`` -> embeddings ``(B, embedding_dim)``."""
        out = self.embedding(features)
        return F.normalize(out, dim=1) if self.normalize else out

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        if mode and self.frozen_backbone:
            self.backbone.eval()
        if mode and self.freeze_bn:
            freeze_batchnorm(self)
        return self
