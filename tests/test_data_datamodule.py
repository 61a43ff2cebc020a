"""DMLDataModule: Hydra configs, batch contract, splits, errors, Lightning DDP sharding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from memvir_pl.data import ClassBalancedBatchSampler, DMLDataModule
from tests.data_fixtures import write_cub, write_folder, write_inshop

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL_GLYPHS = {"chars": "ABCDEFGHJKMNPQRSTUVWXYZabdefghqrt0123456789", "min_fonts": 12}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("glyph_cache")


def _compose(name: str, *overrides: str, data_dir="/data", cache="/cache"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            overrides=[f"+data={name}", f"+paths.data_dir={data_dir}", f"+paths.cache_dir={cache}", "+seed=0"]
            + list(overrides)
        )


def _check_batch(batch: dict, size: int, with_query: bool = False) -> None:
    assert set(batch) == {"image", "label", "index"} | ({"is_query"} if with_query else set())
    n = len(batch["label"])
    assert batch["image"].shape == (n, 3, size, size) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
    if with_query:
        assert batch["is_query"].dtype == torch.bool and batch["is_query"].shape == (n,)


def test_glyphs_config_gives_the_documented_batches(cache_dir):
    cfg = _compose("glyphs", cache=str(cache_dir))
    assert cfg.data.m_per_class == 4 and cfg.data.image_size == 32
    dm = instantiate(cfg.data)
    assert isinstance(dm, DMLDataModule)
    dm.setup("fit")
    train = dm.split("train")
    assert dm.num_classes == train.num_classes > 600
    assert dm.glyph_summary["classes"] == sum(
        dm.split(s).num_classes for s in ("train", "val", "test")
    )

    loader = dm.train_dataloader()
    assert isinstance(loader.batch_sampler, ClassBalancedBatchSampler)
    batch = next(iter(loader))
    _check_batch(batch, 32)
    assert len(batch["label"]) == 128
    assert (batch["label"].view(32, 4) == batch["label"].view(32, 4)[:, :1]).all()
    # the items are those of the split: labels follow the index
    torch.testing.assert_close(batch["label"], torch.from_numpy(train.labels[batch["index"]]))
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1

    val = dm.split("val")
    indices = torch.cat([b["index"] for b in dm.val_dataloader()])
    assert torch.equal(indices, torch.arange(len(val.labels)))  # no shuffle, no drop_last
    assert set(val.codepoints.tolist()).isdisjoint(train.codepoints.tolist())
    dm.setup("test")
    test_batch = next(iter(dm.test_dataloader()))
    _check_batch(test_batch, 32)
    expected = torch.from_numpy(dm.split("test").images[:512]).float() / 127.5 - 1
    torch.testing.assert_close(test_batch["image"][:, 0], expected)


def test_plain_shuffle_is_seeded_and_drops_the_last_batch(cache_dir):
    options = {**SMALL_GLYPHS, "cache_dir": str(cache_dir)}

    def first_indices(seed):
        dm = DMLDataModule(batch_size=16, seed=seed, options=options)
        loader = dm.train_dataloader()
        assert len(loader) == len(dm.split("train").labels) // 16
        return next(iter(loader))["index"]

    assert torch.equal(first_indices(0), first_indices(0))
    assert not torch.equal(first_indices(0), first_indices(1))


def test_inshop_batches_carry_query_flags(tmp_path):
    write_inshop(tmp_path)
    dm = DMLDataModule(
        "inshop",
        root=str(tmp_path),
        batch_size=4,
        m_per_class=2,
        transform="imagenet",
        image_size=16,
        eval_batch_size=3,
    )
    dm.setup("fit")
    assert dm.num_classes == 2
    train_batch = next(iter(dm.train_dataloader()))
    _check_batch(train_batch, 16)
    assert sorted(train_batch["label"].tolist()) == [0, 0, 1, 1]
    batches = list(dm.val_dataloader())
    assert [len(b["label"]) for b in batches] == [3, 2]
    for b in batches:
        _check_batch(b, 16, with_query=True)
    assert torch.cat([b["is_query"] for b in batches]).tolist() == [True, True, False, False, False]
    assert torch.cat([b["label"] for b in batches]).tolist() == [0, 1, 0, 0, 1]


def test_val_is_test_unless_val_fraction_holds_out_training_classes(tmp_path):
    write_cub(tmp_path)
    plain = DMLDataModule("cub", root=str(tmp_path), image_size=16)
    assert plain.split("val") is plain.split("test") and plain.num_classes == 3
    held = DMLDataModule("cub", root=str(tmp_path), image_size=16, val_fraction=0.34)
    train, val = held.split("train"), held.split("val")
    assert held.num_classes == 2 and val.num_classes == 1
    assert set(train.classes).isdisjoint(val.classes)
    assert set(train.classes) | set(val.classes) == {"1", "2", "100"}
    assert held.split("test").paths == plain.split("test").paths


@pytest.mark.parametrize("name", ["glyphs", "glyphs_cjk", "cub", "cars", "sop", "inshop", "folder"])
def test_every_data_config_instantiates(tmp_path, name):
    cfg = _compose(name, "data.root=/somewhere" if name == "folder" else "data.seed=3")
    dm = instantiate(cfg.data)
    assert isinstance(dm, DMLDataModule) and dm.dataset == name.removesuffix("_cjk")
    if name == "glyphs_cjk":
        assert dm.options["chars"] == "gb2312" and dm.options["min_fonts"] == 20
    elif name != "glyphs":
        assert str(dm.root).startswith("/data/") or name == "folder"


def test_folder_config_reads_the_tree(tmp_path):
    write_folder(tmp_path)
    cfg = _compose(
        "folder",
        f"data.root={tmp_path}",
        "data.image_size=16",
        "data.num_workers=0",
        "data.pin_memory=false",
    )
    dm = instantiate(cfg.data)
    assert dm.num_classes == 2 and dm.split("test").num_classes == 3
    _check_batch(next(iter(dm.val_dataloader())), 16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
        ({"dataset": "cub"}, "needs data.root"),
        ({"options": {"min_font": 3}}, "unknown glyph options"),
        ({"dataset": "cub", "root": "/x", "transform": "glyph"}, "does not fit dataset"),
        ({"transform": "imagenet"}, "does not fit dataset"),
        ({"val_fraction": 0.2}, "fractions"),
        ({"options": {"fractions": {"train": 0.5, "val": 0.5, "test": 0.5}}}, "sum to 1"),
        ({"dataset": "sop", "root": "/x", "options": {"fonts": "x"}}, "takes no options"),
    ],
)
def test_bad_configuration_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DMLDataModule(**kwargs)


def test_missing_dataset_files_surface_through_num_classes(tmp_path):
    dm = DMLDataModule("sop", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Ebay_train.txt"):
        _ = dm.num_classes


class _RecordIndices(pl.LightningModule):
    """Records the training batches' indices of every rank and epoch into a JSON file."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.out_dir = out_dir
        self.seen: dict[int, list[list[int]]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).append(batch["index"].tolist())
        return self.weight * batch["image"].mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_train_end(self):
        path = Path(self.out_dir) / f"rank{self.global_rank}.json"
        path.write_text(json.dumps(self.seen))


@pytest.mark.slow
@pytest.mark.ddp
def test_lightning_ddp_shards_class_balanced_batches(tmp_path, cache_dir):
    options = {
        **SMALL_GLYPHS,
        "cache_dir": str(cache_dir),
        "fractions": {"train": 1.0, "val": 0.0, "test": 0.0},
    }
    dm = DMLDataModule(batch_size=8, m_per_class=2, seed=5, options=options)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_RecordIndices(str(tmp_path)), datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    labels = dm.split("train").labels
    single = ClassBalancedBatchSampler(labels, 8, 2, seed=5, drop_last=True)
    for epoch in (0, 1):
        reference = [b.tolist() for b in single.epoch_batches(epoch)]
        shards = [ranks[r][str(epoch)] for r in range(2)]
        assert len(shards[0]) == len(shards[1]) == len(single) // 2
        assert shards[0] == reference[0 : 2 * len(shards[0]) : 2]
        assert shards[1] == reference[1 : 2 * len(shards[1]) : 2]
        for batch in shards[0] + shards[1]:
            assert np.all(labels[batch].reshape(4, 2) == labels[batch].reshape(4, 2)[:, :1])
    assert ranks[0]["0"] != ranks[0]["1"]  # set_epoch reached the sampler


@pytest.mark.parametrize("name", ["glyphs", "emoji"])
def test_the_config_options_are_the_options_dataclass_defaults(name):
    """``conf/data/<name>.yaml`` repeats the defaults for Hydra overrides; the dataclass is their source."""
    import dataclasses

    from omegaconf import OmegaConf

    from memvir_pl.data.datamodule import RENDERED_OPTIONS

    configured = OmegaConf.to_container(_compose(name).data.options, resolve=True)
    defaults = dataclasses.asdict(RENDERED_OPTIONS[name]())
    assert configured.pop("cache_dir") == "/cache" and defaults.pop("cache_dir") is None
    assert configured == defaults


def test_unknown_rendered_options_are_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown glyph options \['min_font'\]; known: \['fonts', 'chars', 'min_fonts'"):
        DMLDataModule("glyphs", options={"min_font": 3})


def test_every_split_kind_answers_the_split_protocol(tmp_path, cache_dir):
    """Image files, glyphs and arrays: the same three questions, and the content digest the feature
    cache is keyed by stays the formula it always was (paths relative to the root, sizes, labels)."""
    from memvir_pl.data import GlyphSplit, ImageList
    from memvir_pl.data.emoji import EmojiSplit
    from memvir_pl.data.features import array_digest
    from memvir_pl.data.transforms import build_transform

    root = tmp_path / "inshop"
    write_inshop(root)
    files = DMLDataModule("inshop", root=str(root)).split("test")
    assert isinstance(files, ImageList) and files.is_query is not None
    sizes = [Path(p).stat().st_size for p in files.paths]
    relative = [str(Path(p).relative_to(root)) for p in files.paths]
    assert files.content_digest(str(root)) == array_digest(relative, files.labels, files.is_query, sizes)
    rows = files.item_rows()
    assert [r["index"] for r in rows] == list(range(len(files.labels)))
    assert [r["path"] for r in rows] == list(files.paths) and "is_query" in rows[0]
    item = files.dataset(build_transform("imagenet", False, 32))[0]
    assert set(item) == {"image", "label", "index", "is_query"}

    glyphs = DMLDataModule("glyphs", options={**SMALL_GLYPHS, "cache_dir": str(cache_dir)}).split("val")
    assert isinstance(glyphs, GlyphSplit) and glyphs.is_query is None
    assert glyphs.content_digest(None) == array_digest(glyphs.images, glyphs.labels)
    row = glyphs.item_rows()[3]
    assert row["char"] == chr(int(glyphs.codepoints[glyphs.labels[3]])) and row["font"] == glyphs.fonts[3]
    assert len(glyphs.dataset(build_transform("glyph", False, 32))) == len(glyphs.labels)

    images = np.zeros((2, 8, 8, 3), np.uint8)
    emoji = EmojiSplit(images, np.array([0, 1]), ("grinning face", "red heart"), ("apple", "google"))
    assert emoji.is_query is None and emoji.content_digest(None) == array_digest(images, emoji.labels)
    assert emoji.item_rows()[1] == {"index": 1, "label": 1, "class": "red heart", "design": "google"}
    assert emoji.dataset(build_transform("imagenet", False, 8))[1]["label"] == 1
