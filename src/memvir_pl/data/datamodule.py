"""DMLDataModule: one LightningDataModule for every DML dataset of the project."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from memvir_pl.data.emoji.build import EmojiOptions, EmojiSet, load_emoji_set
from memvir_pl.data.emoji.sources import FETCH_COMMAND
from memvir_pl.data.features import FeatureDataset, cached_features, extract_features, module_digest
from memvir_pl.data.glyphs import GlyphOptions, GlyphSet
from memvir_pl.data.glyphs import load_glyph_set as _load_glyph_set
from memvir_pl.data.official import DATASETS, load_file_dataset
from memvir_pl.data.records import Split, hold_out_classes
from memvir_pl.data.sampler import (
    ClassBalancedBatchSampler,
    EpochBatchSampler,
    ShuffledBatchSampler,
    train_position,
)
from memvir_pl.data.splits import SPLITS, check_fractions
from memvir_pl.data.transforms import build_transform, input_settings

log = logging.getLogger(__name__)
#: The options of the data sets built in memory from local files (the others take none).
RENDERED_OPTIONS: Mapping[str, type[GlyphOptions] | type[EmojiOptions]] = {"glyphs": GlyphOptions, "emoji": EmojiOptions}


class DMLDataModule(pl.LightningDataModule):
    """Train / val / test loaders of a class-disjoint DML dataset.

    Batches are dicts: ``image`` (B, 3, H, W) float, ``label`` (B,) int64 in [0, C) of the
    split, ``index`` (B,) int64 position in the split, and ``is_query`` (B,) bool on
    query/gallery splits (In-Shop test). Validation is a held-out set of classes for ``glyphs``
    and ``emoji`` (their ``fractions`` option) and, with ``val_fraction > 0``, for the file
    datasets; otherwise the file datasets validate on their test split, as the papers do.

    Args:
        dataset: ``glyphs`` (embedded, rendered from fonts), ``emoji`` (rendered from the npm
            packages in ``root``, see :mod:`memvir_pl.data.emoji`) or one of ``cub``,
            ``cars``, ``sop``, ``inshop``, ``folder``.
        root: the dataset folder (file datasets; for ``emoji`` the package tarballs).
        batch_size: training batch per process.
        eval_batch_size: evaluation batch (default ``batch_size``).
        m_per_class: images per class in a training batch (class-balanced sampler);
            ``None`` = plain shuffle.
        num_workers: DataLoader worker processes.
        transform: preset name (``bninception``, ``imagenet``, ``glyph``); default ``glyph`` for
            glyphs and ``bninception`` otherwise.
        image_size: network input side in pixels (default 32 for glyphs, 224 otherwise); for
            glyphs also the rendering size.
        hflip: random horizontal flip in the PIL presets' training transform (``False`` for
            classes with a direction, e.g. emoji arrows).
        drop_last: drop the last incomplete training batch.
        seed: seed of the training order (sampler / shuffle).
        val_fraction: share of training classes held out for validation (file datasets).
        pin_memory: DataLoader ``pin_memory``.
        augment: random training augmentation (the preset's); ``False`` gives the training
            images the evaluation transform.
        cache_features: train and evaluate on the pooled features of a frozen backbone
            (``model.freeze_stages=all``), computed once per split with the evaluation transform
            (no augmentation) and kept in ``feature_cache_dir``; batches then carry the features
            (B, F) as ``image``. The model is handed over with :meth:`use_backbone`
            (``memvir_pl.train`` does it).
        feature_cache_dir: folder of the feature files (``None``: compute them in every run).
        options: the rendered data sets' options, any subset of the fields of
            :class:`~memvir_pl.data.glyphs.GlyphOptions` (glyphs) or
            :class:`~memvir_pl.data.emoji.build.EmojiOptions` (emoji), whose defaults fill the rest.
    """

    def __init__(
        self,
        dataset: str = "glyphs",
        root: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        m_per_class: int | None = None,
        num_workers: int = 0,
        transform: str | None = None,
        image_size: int | None = None,
        drop_last: bool = True,
        seed: int = 0,
        val_fraction: float = 0.0,
        pin_memory: bool = False,
        options: Mapping[str, Any] | None = None,
        hflip: bool = True,
        augment: bool = True,
        cache_features: bool = False,
        feature_cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if dataset not in RENDERED_OPTIONS and dataset not in DATASETS:
            raise ValueError(
                f"unknown dataset {dataset!r}; expected one of {[*RENDERED_OPTIONS, *DATASETS]}"
            )
        self.dataset = dataset
        self.transform, self.image_size = input_settings(dataset, transform, image_size)
        self.options = self._check_options(dataset, dict(options or {}), val_fraction, root)
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.m_per_class = m_per_class
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.seed = seed
        self.val_fraction = val_fraction
        self.pin_memory = pin_memory
        self.hflip = hflip
        self.augment = augment
        self.cache_features = cache_features
        self.feature_cache_dir = feature_cache_dir
        self._backbone: torch.nn.Module | None = None
        self._features: dict[str, torch.Tensor] = {}
        self.glyph_summary: Mapping[str, float] | None = None
        self._splits: dict[str, Split] | None = None
        self._resume_position: dict[str, int] | None = None  # from a checkpoint, see load_state_dict

    @staticmethod
    def _check_options(
        dataset: str, options: dict[str, Any], val_fraction: float, root: str | None
    ) -> dict[str, Any]:
        if dataset == "emoji" and root is None:
            raise ValueError(
                "dataset 'emoji' needs data.root: the folder of its npm package tarballs, "
                f"fetched by `{FETCH_COMMAND}`"
            )
        if dataset not in RENDERED_OPTIONS:
            if options:
                raise ValueError(f"dataset {dataset!r} takes no options, got {sorted(options)}")
            if root is None:
                raise ValueError(
                    f"dataset {dataset!r} needs data.root: {DATASETS[dataset].layout}, "
                    f"from {DATASETS[dataset].url}"
                )
            return options
        defaults = dataclasses.asdict(RENDERED_OPTIONS[dataset]())
        unknown = set(options) - set(defaults)
        if unknown:
            raise ValueError(
                f"unknown {dataset.removesuffix('s')} options {sorted(unknown)}; "
                f"known: {list(defaults)}"
            )
        if val_fraction:
            raise ValueError(
                f"{dataset} splits by classes: set data.options.fractions, not val_fraction"
            )
        merged = {**defaults, **options}
        merged["fractions"] = check_fractions(merged["fractions"])
        return merged

    def _load_glyphs(self) -> GlyphSet:
        options = {k: v for k, v in self.options.items() if k != "fractions"}
        if options["fonts"] is not None and not isinstance(options["fonts"], str):
            options["fonts"] = [str(f) for f in options["fonts"]]
        return _load_glyph_set(image_size=self.image_size, **options)

    def _load_emoji(self) -> EmojiSet:
        options = {k: self.options[k] for k in (*EmojiOptions.BUILD_KEYS, "cache_dir")}
        return load_emoji_set(self.root, **options)

    def prepare_data(self) -> None:
        """Build the glyph or emoji set into its cache once (rank 0) before every rank loads it."""
        if self.dataset == "glyphs":
            self._load_glyphs()
        elif self.dataset == "emoji":
            self._load_emoji()

    def _load(self) -> dict[str, Split]:
        if self._splits is None:
            fractions = self.options.get("fractions")
            if self.dataset == "glyphs":
                glyphs = self._load_glyphs()
                self.glyph_summary = glyphs.summary
                self._splits = {name: glyphs.split(name, fractions) for name in SPLITS}
            elif self.dataset == "emoji":
                emoji = self._load_emoji()
                limit = {"train": self.options["train_classes"]}
                self._splits = {name: emoji.split(name, fractions, limit.get(name))
                                for name in SPLITS}
            else:
                splits = load_file_dataset(self.dataset, self.root)
                train, val = splits["train"], splits["test"]
                if self.val_fraction:
                    train, val = hold_out_classes(train, self.val_fraction)
                self._splits = {"train": train, "val": val, "test": splits["test"]}
        return self._splits

    def setup(self, stage: str | None = None) -> None:
        """Read the split lists (annotation files, or the glyph set); images load lazily."""
        self._load()

    @property
    def validates_on_test(self) -> bool:
        """Whether the validation split is the test split: a file dataset with ``val_fraction=0``
        (as the papers evaluate). Then a metric that chooses a checkpoint is measured on test."""
        return self.dataset in DATASETS and not self.val_fraction

    @property
    def num_classes(self) -> int:
        """Number of training classes (reads only annotations, or the cached glyph set)."""
        return self._load()["train"].num_classes

    def split(self, name: str) -> Split:
        """The ``train``, ``val`` or ``test`` split (an ``ImageList``, ``GlyphSplit`` or ``EmojiSplit``)."""
        return self._load()[name]

    def split_dataset(self, name: str, train: bool = False) -> Dataset:
        """The ``name`` split as a Dataset, with the training (augmenting) or evaluation transform
        (with ``cache_features``: the split's pooled features, the same for training and evaluation)."""
        if self.cache_features:
            split = self.split(name)
            return FeatureDataset(self.split_features(name), split.labels, split.is_query)
        return self._image_dataset(self.split(name), train)

    def _image_dataset(self, split: Split, train: bool) -> Dataset:
        return split.dataset(build_transform(self.transform, train and self.augment, self.image_size, self.hflip))

    # ------------------------------------------------------------------ frozen-backbone features
    def use_backbone(self, model: torch.nn.Module) -> None:
        """Hand over the network whose frozen backbone computes the cached features.

        Args:
            model: an :class:`~memvir_pl.models.EmbeddingNet` built with ``freeze_stages="all"``
                (its ``features(images)`` gives the pooled features (B, F)).
        """
        if not getattr(model, "frozen_backbone", False):
            raise ValueError(
                "data.cache_features=true trains on features computed once by the backbone, so the backbone "
                "must not train: set model.freeze_stages=all (or data.cache_features=false)."
            )
        self._backbone = model
        self._features.clear()
        log.info("data.cache_features: training on the pooled features of the evaluation transform, "
                 "without augmentation")

    def split_features(self, name: str) -> torch.Tensor:
        """(N, F) float32 pooled features of split ``name``: from the cache, else computed (on the
        trainer's device when a trainer is attached) and cached. Under DDP the first process
        computes and saves them while the others wait, then read the file."""
        if name in self._features:
            return self._features[name]
        model = self._backbone
        if model is None:
            raise ValueError(
                "DMLDataModule(cache_features=True) needs the model first: call datamodule.use_backbone(model) "
                "(memvir_pl.train does it), or set cache_features=False."
            )
        split = self.split(name)
        images = self._image_dataset(split, train=False)
        strategy = self.trainer.strategy if self.trainer is not None else None
        device = strategy.root_device if strategy is not None else torch.device("cpu")
        key = {
            "backbone": module_digest(model.backbone),
            "pooling": repr(model.pool),
            "dataset": self.dataset,
            "content": split.content_digest(self.root),
            "image_size": self.image_size,
            "transform": self.transform,
            "device": device.type,  # kernels differ in the last bits between device types
        }

        def compute() -> torch.Tensor:
            was_device, was_training = next(model.parameters()).device, model.training
            model.to(device).eval()
            try:
                return extract_features(model.features, images, self.eval_batch_size, device, **self._loader_kwargs())
            finally:
                model.to(was_device).train(was_training)

        def load() -> torch.Tensor:
            return cached_features(self.feature_cache_dir, key, compute, len(split.labels))

        if strategy is not None and strategy.world_size > 1 and self.feature_cache_dir is not None:
            if strategy.is_global_zero:
                self._features[name] = load()
            strategy.barrier("memvir_pl_features")
        if name not in self._features:
            self._features[name] = load()
        return self._features[name]

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
        }

    def train_dataloader(self) -> DataLoader:
        """The training loader: a batch sampler whose batches (and their augmentation seeds) are a
        function of (seed, epoch); after a mid-epoch restore it starts at the next batch."""
        num_replicas, rank = self._world()
        common = {"seed": self.seed, "drop_last": self.drop_last, "num_replicas": num_replicas, "rank": rank,
                  "resume": self._resume_position}
        labels = self.split("train").labels
        sampler: EpochBatchSampler
        if self.m_per_class is None:
            sampler = ShuffledBatchSampler(len(labels), batch_size=self.batch_size, **common)
        else:
            sampler = ClassBalancedBatchSampler(labels, batch_size=self.batch_size, m_per_class=self.m_per_class,
                                                **common)
        # its own generator: creating the loader's iterator leaves torch's global RNG untouched
        return DataLoader(self.split_dataset("train", train=True), batch_sampler=sampler,
                          generator=torch.Generator().manual_seed(self.seed), **self._loader_kwargs())

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: where the training epoch in progress stands (or ``None``)."""
        return {"train_position": None if self.trainer is None else train_position(self.trainer)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_position = state_dict.get("train_position")

    def _eval_loader(self, name: str) -> DataLoader:
        return DataLoader(
            self.split_dataset(name, train=False),
            batch_size=self.eval_batch_size,
            shuffle=False,
            drop_last=False,
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
