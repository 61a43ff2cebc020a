"""Frozen backbone (model.freeze_stages=all) and the cached pooled features (data.cache_features)."""

from __future__ import annotations

import pytest
import torch

import memvir_pl.data.features as features_module
from memvir_pl.data.features import FeatureDataset, cached_features, module_digest
from memvir_pl.models import EmbeddingNet
from memvir_pl.train import train
from tests.hydra_helpers import QUIET, compose_config

FROZEN = ["data.options.chars='ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'", "data.batch_size=32",
          "model.freeze_stages=all", "data.augment=false", "trainer.max_epochs=3", "+trainer.limit_train_batches=4",
          "memvir.num_steps=2", "memvir.step_gap=1", "memvir.warmup_epochs=1", "module.lr=1.0e-2",
          "callbacks.model_checkpoint.save_weights_only=false"]


def _run(tmp_path, name, extra):
    cfg = compose_config([*FROZEN, *QUIET, *extra, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path / name)
    metrics = train(cfg)
    state = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return metrics, state


@pytest.mark.slow
def test_training_on_cached_features_equals_training_through_the_frozen_backbone(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    plain_metrics, plain = _run(tmp_path, "images", [])
    cached_metrics, cached = _run(tmp_path, "features", ["data.cache_features=true"])

    # the same steps: the same weights, MemVir memory and metrics, to float tolerance (the backbone's
    # features are computed in batches of another size)
    weights = {k: v for k, v in plain["state_dict"].items() if not k.startswith("model.backbone.")}
    assert weights.keys() and all(k.startswith(("model.embedding.", "loss.")) for k in weights)
    for key, value in weights.items():
        torch.testing.assert_close(cached["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for key, value in plain["state_dict"].items():  # the frozen backbone did not move in either run
        if key.startswith("model.backbone."):
            assert torch.equal(cached["state_dict"][key], value), key
    memory = plain["callbacks"]["MemVirCallback"]["memory"]
    assert memory["pushes"] == 8  # epochs 2-3 x 4 steps after one warm-up epoch
    torch.testing.assert_close(cached["callbacks"]["MemVirCallback"]["memory"]["proxies"], memory["proxies"],
                               rtol=1e-4, atol=1e-5)
    for part in ("final", "best", "test"):
        for name, value in plain_metrics[part].items():
            assert cached_metrics[part][name] == pytest.approx(value, abs=1e-4), (part, name)

    # a second run with the same backbone and data reads the features from the cache
    assert len(list((tmp_path / "cache" / "features").glob("features-*.npz"))) == 3  # train, val, test
    monkeypatch.setattr(features_module, "extract_features",
                        lambda *a, **k: pytest.fail("features computed again instead of read from the cache"))
    again, _ = _run(tmp_path, "again", ["data.cache_features=true"])
    assert again["test"] == cached_metrics["test"]


def test_cache_features_needs_a_frozen_backbone(tmp_path):
    cfg = compose_config([*QUIET, "data.cache_features=true", f"paths.cache_dir={tmp_path}"], tmp_path / "run")
    with pytest.raises(ValueError, match="set model.freeze_stages=all"):
        train(cfg)


def test_frozen_backbone_stays_in_eval_mode_and_takes_pooled_features():
    torch.manual_seed(0)
    net = EmbeddingNet("small_cnn", embedding_dim=8, freeze_stages="all").train()
    assert not net.backbone.training and net.embedding.training
    assert not any(p.requires_grad for p in net.backbone.parameters())
    images = torch.randn(5, 3, 32, 32)
    pooled = net.features(images)
    assert pooled.shape == (5, net.feature_dim)
    torch.testing.assert_close(net(pooled), net(images))
    with pytest.raises(ValueError, match=f"must have {net.feature_dim} columns"):
        net(pooled[:, :3])
    trained = EmbeddingNet("small_cnn", embedding_dim=8)
    with pytest.raises(ValueError, match="only right when the backbone is frozen"):
        trained(torch.randn(2, trained.feature_dim))
    with pytest.raises(ValueError, match="'all'"):
        EmbeddingNet("small_cnn", embedding_dim=8, freeze_stages="some")


def test_feature_dataset_items_and_module_digest():
    data = FeatureDataset(torch.arange(12.0).view(4, 3), torch.tensor([0, 1, 1, 2]),
                          is_query=torch.tensor([True, False, True, False]).numpy())
    items = data.__getitems__([2, 0])
    assert [int(i["index"]) for i in items] == [2, 0] and [int(i["label"]) for i in items] == [1, 0]
    assert torch.equal(items[0]["image"], torch.tensor([6.0, 7.0, 8.0])) and bool(items[0]["is_query"])
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert module_digest(a) == module_digest(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert module_digest(a) != module_digest(b)


def test_a_stale_cache_file_is_named_in_the_error(tmp_path):
    key = {"split": "train"}
    cached_features(tmp_path, key, lambda: torch.zeros(3, 2), expected_rows=3)
    with pytest.raises(ValueError, match=r"do not match the split's 4 images; delete the stale cache file"):
        cached_features(tmp_path, key, lambda: torch.zeros(4, 2), expected_rows=4)


def test_the_cache_key_names_everything_the_features_depend_on(tmp_path, monkeypatch):
    from memvir_pl.data import DMLDataModule

    keys = []
    monkeypatch.setattr("memvir_pl.data.datamodule.cached_features",
                        lambda folder, key, compute, rows: keys.append(key) or torch.zeros(rows, 4))
    chars = {"chars": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "cache_dir": str(tmp_path)}

    def key(image_size=32, pooling="gap", seed=0, split="val"):
        torch.manual_seed(seed)
        data = DMLDataModule("glyphs", image_size=image_size, options=chars, cache_features=True)
        data.use_backbone(EmbeddingNet("small_cnn", embedding_dim=8, pooling=pooling, freeze_stages="all"))
        data.split_features(split)
        return keys[-1]

    base = key()
    assert base == key()  # the same backbone weights and data: the same file
    assert key(split="test")["content"] != base["content"]
    for changed in (key(image_size=24), key(pooling="gmp"), key(seed=1)):
        assert changed != base
    assert {k for k in base} == {"backbone", "pooling", "dataset", "content", "image_size", "transform", "device"}
