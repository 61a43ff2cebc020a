"""DML data: datasets (glyphs, CUB, CARS196, SOP, In-Shop, folders), sampler, transforms."""

from memvir_pl.data.datamodule import DMLDataModule
from memvir_pl.data.datasets import GlyphDataset, ImageFileDataset, UnreadableImageError
from memvir_pl.data.glyphs import (
    GlyphOptions,
    GlyphSet,
    GlyphSplit,
    build_glyph_set,
    load_glyph_set,
)
from memvir_pl.data.official import DATASETS, load_file_dataset
from memvir_pl.data.records import ImageList, Split, hold_out_classes
from memvir_pl.data.sampler import ClassBalancedBatchSampler, SeededBatch, ShuffledBatchSampler
from memvir_pl.data.transforms import GlyphTransform, build_transform

__all__ = [
    "DATASETS",
    "ClassBalancedBatchSampler",
    "DMLDataModule",
    "GlyphDataset",
    "GlyphOptions",
    "GlyphSet",
    "GlyphSplit",
    "GlyphTransform",
    "ImageFileDataset",
    "ImageList",
    "SeededBatch",
    "ShuffledBatchSampler",
    "Split",
    "UnreadableImageError",
    "build_glyph_set",
    "build_transform",
    "hold_out_classes",
    "load_file_dataset",
    "load_glyph_set",
]
