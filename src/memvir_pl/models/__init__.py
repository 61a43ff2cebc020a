"""Embedding networks: backbones (BN-Inception, ResNet-50, EfficientNet-Lite0, small CNN),
global pooling and the L2-normalised embedding head."""

from memvir_pl.models.backbones import BACKBONES, BackboneSpec, build_backbone
from memvir_pl.models.bninception import BNInception
from memvir_pl.models.embedding import EmbeddingNet, batchnorm_layers, freeze_batchnorm
from memvir_pl.models.pooling import POOLINGS, GlobalPool
from memvir_pl.models.small_cnn import SmallCNN
from memvir_pl.models.weights import WeightsUnavailableError, hub_cache_path

__all__ = [
    "BACKBONES",
    "POOLINGS",
    "BNInception",
    "BackboneSpec",
    "EmbeddingNet",
    "GlobalPool",
    "SmallCNN",
    "WeightsUnavailableError",
    "batchnorm_layers",
    "build_backbone",
    "freeze_batchnorm",
    "hub_cache_path",
]
