"""The embed and search tools on a short trained glyph run, through their command lines and Python API."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from memvir_pl.data import DMLDataModule
from memvir_pl.data.transforms import GlyphTransform
from memvir_pl.inference import load_model
from memvir_pl.search import hydra_args, search_images, write_results
from tests.hydra_helpers import QUIET, run_module

TINY_RUN = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
            "data.batch_size=32", "memvir.warmup_epochs=0", "memvir.step_gap=0", "test=false",
            "hydra.run.dir=out", *QUIET]
GALLERY_ROWS = range(0, 240, 20)  # 12 test glyphs of different characters and fonts
QUERY_ROWS = (0, 60, 200)  # copied into the query folder under other names


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The working folder of a short training run (glyphs, small CNN), single-threaded subprocesses."""
    cwd = tmp_path_factory.mktemp("tools")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        result = run_module("memvir_pl.train", TINY_RUN, cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


@pytest.fixture(scope="module")
def ckpt(run_dir) -> Path:
    return run_dir / "out" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def datamodule(run_dir) -> DMLDataModule:
    """The run's data (default glyph options), from the glyph cache the run wrote."""
    data = DMLDataModule(options={"cache_dir": str(run_dir / ".cache")})
    data.setup("fit")
    return data


def model_embeddings(ckpt: Path, images: np.ndarray) -> torch.Tensor:
    """Reference: the checkpoint's network on uint8 glyphs (N, S, S) with the evaluation transform."""
    model = load_model(ckpt).model
    with torch.no_grad():
        return model(GlyphTransform(train=False)(torch.from_numpy(images)))


def write_folders(root: Path, images: np.ndarray) -> tuple[Path, Path]:
    """A gallery (PNGs in two levels, plus a text file) and a query folder of copies of some of them."""
    gallery, queries = root / "gallery", root / "queries"
    for row in GALLERY_ROWS:
        path = gallery / ("sub" if row % 40 else "") / f"g{row:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[row]).save(path)
    (gallery / "notes.txt").write_text("not an image: ignored")
    queries.mkdir()
    for row in QUERY_ROWS:
        shutil.copy(next(gallery.rglob(f"g{row:03d}.png")), queries / f"copy_of_{row:03d}.png")
    return gallery, queries


@pytest.mark.slow
def test_embed_writes_the_split_with_its_labels_and_items(run_dir, ckpt, datamodule, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = run_module("memvir_pl.embed", [f"ckpt_path={ckpt}", "split=val", "output_dir=emb",
                                            "hydra.run.dir=embed_run"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    split = datamodule.split("val")
    embeddings = np.load(run_dir / "emb" / "val_embeddings.npy")
    labels = np.load(run_dir / "emb" / "val_labels.npy")
    assert embeddings.shape == (len(split.labels), 128) and embeddings.dtype == np.float32
    np.testing.assert_array_equal(labels, split.labels)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    rows = [0, 1, 500, len(split.labels) - 1]
    reference = model_embeddings(ckpt, split.images[rows]).numpy()
    np.testing.assert_allclose(embeddings[rows], reference, atol=1e-5)

    with (run_dir / "emb" / "val_items.csv").open(encoding="utf-8") as f:
        items = list(csv.DictReader(f))
    assert len(items) == len(split.labels)
    assert [int(r["index"]) for r in items] == list(range(len(split.labels)))
    assert [int(r["label"]) for r in items] == split.labels.tolist()
    assert [r["char"] for r in items] == [chr(split.codepoints[label]) for label in split.labels]
    assert [r["codepoint"] for r in items[:1]] == [f"U+{split.codepoints[split.labels[0]]:04X}"]
    # within a class every image is a different font (the glyph set keeps one rendering per face)
    assert len({(r["label"], r["font"]) for r in items}) == len(items)
    assert all(r["font"].endswith((".ttf", ".otf")) or "#" in r["font"] for r in items)


@pytest.mark.slow
def test_search_finds_each_query_copy_first(run_dir, ckpt, datamodule, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    images = datamodule.split("test").images
    gallery, queries = write_folders(tmp_path, images)
    result = run_module("memvir_pl.search", [f"ckpt_path={ckpt}", f"gallery={gallery}", f"query={queries}",
                                             "k=4", "output=results.csv", "--save-grid", "grid.png",
                                             "hydra.run.dir=search_run"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "15 images: 15 embedded, 0 from the cache" in result.stdout
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * len(QUERY_ROWS)

    # reference: brute-force cosine similarities of the network on the original pixels
    gallery_rows = sorted(GALLERY_ROWS, key=lambda r: str(next(gallery.rglob(f"g{r:03d}.png"))))
    reference = model_embeddings(ckpt, images[list(QUERY_ROWS)]) @ model_embeddings(ckpt, images[gallery_rows]).T
    for q, row in enumerate(QUERY_ROWS):
        found = [r for r in rows if r["query"] == str(queries / f"copy_of_{row:03d}.png")]
        assert [int(r["rank"]) for r in found] == [1, 2, 3, 4]
        assert Path(found[0]["gallery"]).name == f"g{row:03d}.png"
        assert abs(float(found[0]["similarity"]) - 1.0) < 1e-5
        expected = reference[q].sort(descending=True)
        np.testing.assert_allclose([float(r["similarity"]) for r in found], expected.values[:4], atol=1e-5)
        assert [Path(r["gallery"]).name for r in found] == [f"g{gallery_rows[i]:03d}.png" for i in expected.indices[:4]]
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[1] > grid.size[0] * 0.5 and np.asarray(grid.convert("L")).std() > 10


@pytest.mark.slow
def test_search_writes_json_and_prints_without_output(run_dir, ckpt, datamodule, tmp_path):
    gallery, queries = write_folders(tmp_path, datamodule.split("test").images)
    result = search_images(ckpt, gallery, queries / "copy_of_060.png", k=2, backend="torch")
    path = write_results(result, tmp_path / "out" / "results.json")
    data = json.loads(path.read_text())
    assert [entry["query"] for entry in data] == [str(queries / "copy_of_060.png")]
    assert [r["rank"] for r in data[0]["results"]] == [1, 2]
    assert Path(data[0]["results"][0]["gallery"]).name == "g060.png"
    assert data[0]["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"must end in \.csv or \.json"):
        write_results(result, tmp_path / "results.txt")


@pytest.mark.slow
def test_search_cache_is_reused_and_refreshed(run_dir, ckpt, datamodule, tmp_path):
    images = datamodule.split("test").images
    gallery, queries = write_folders(tmp_path, images)
    cache = tmp_path / "cache"
    first = search_images(ckpt, gallery, queries, k=3, cache_dir=cache)
    assert first.embedded == len(GALLERY_ROWS) + len(QUERY_ROWS)
    assert len(list(cache.glob("search-*.npz"))) == 1
    again = search_images(ckpt, gallery, queries, k=3, cache_dir=cache)
    assert again.embedded == 0
    torch.testing.assert_close(again.similarities, first.similarities, rtol=0, atol=0)

    # replace one gallery image (the copy of query 0) by another glyph, with a later mtime
    changed = gallery / "g000.png"
    Image.fromarray(images[1000]).save(changed)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    refreshed = search_images(ckpt, gallery, queries, k=3, cache_dir=cache)
    assert refreshed.embedded == 1
    fresh = search_images(ckpt, gallery, queries, k=3, cache_dir=None)
    torch.testing.assert_close(refreshed.similarities, fresh.similarities)
    assert torch.equal(refreshed.indices, fresh.indices)
    assert refreshed.similarities[0, 0] < 1.0 - 1e-4  # query 0's copy is gone from the gallery


@pytest.mark.slow
def test_search_errors_are_clear(run_dir, ckpt, datamodule, tmp_path):
    gallery, queries = write_folders(tmp_path, datamodule.split("test").images)
    empty = tmp_path / "empty"
    (empty / ".hidden").mkdir(parents=True)
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(ValueError, match=r"gallery folder .*empty contains no image files"):
        search_images(ckpt, empty, queries)
    with pytest.raises(ValueError, match=r"query .*notes\.txt is not an image file"):
        search_images(ckpt, gallery, gallery / "notes.txt")
    with pytest.raises(FileNotFoundError, match=r"gallery .*missing does not exist"):
        search_images(ckpt, tmp_path / "missing", queries)
    with pytest.raises(ValueError, match=r"k=13 but the gallery .* holds 12 images"):
        search_images(ckpt, gallery, queries, k=13)
    (gallery / "broken.png").write_text("this is text, not a PNG")
    with pytest.raises(ValueError, match=r"broken\.png is not a readable image"):
        search_images(ckpt, gallery, queries)
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nowhere\.ckpt does not exist"):
        search_images(tmp_path / "nowhere.ckpt", gallery, queries)


def test_load_model_reads_the_input_settings_without_building_data(ckpt, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("load_model built a datamodule")

    monkeypatch.setattr(DMLDataModule, "__init__", no_data)
    loaded = load_model(ckpt)
    assert (loaded.preset, loaded.image_size) == ("glyph", 32)
    assert not loaded.model.training


@pytest.mark.slow
def test_search_command_reports_a_missing_checkpoint(tmp_path):
    (tmp_path / "g").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "g" / "a.png")
    result = run_module("memvir_pl.search", ["ckpt_path=nowhere.ckpt", "gallery=g", "query=g/a.png", "k=1"], tmp_path)
    assert result.returncode != 0
    assert "nowhere.ckpt does not exist" in result.stderr and "checkpoints/last.ckpt" in result.stderr


def test_save_grid_flag_becomes_a_hydra_override():
    assert hydra_args(["k=3", "--save-grid", "a.png"]) == ["k=3", "save_grid=a.png"]
    assert hydra_args(["--save-grid=b.png", "k=1"]) == ["save_grid=b.png", "k=1"]
    with pytest.raises(SystemExit, match="needs a PATH"):
        hydra_args(["--save-grid"])


@pytest.fixture(scope="module")
def emoji_ckpt(tmp_path_factory) -> tuple[Path, DMLDataModule]:
    """A checkpoint of the small CNN on the emoji fixture packages (untrained weights) and its data."""
    from memvir_pl.config import compose_config
    from memvir_pl.train import build_run
    from tests.test_data_emoji import K, write_packages

    root = tmp_path_factory.mktemp("emoji_run")
    packages = write_packages(root / "packages")
    cfg = compose_config(["data=emoji", "model=small_cnn", f"data.root={packages}", "data.image_size=24",
                          "data.options.render_size=32", f"data.options.min_designs={K}",
                          f"paths.cache_dir={root / 'cache'}"], root / "run")
    torch.manual_seed(0)
    datamodule, module = build_run(cfg)
    path = root / "emoji.ckpt"
    torch.save({"memvir_pl_config": module.run_config, "state_dict": module.state_dict()}, path)
    return path, datamodule


def test_embed_writes_emoji_rows_with_class_and_design(emoji_ckpt, tmp_path):
    from omegaconf import OmegaConf

    from memvir_pl.embed import embed_split

    ckpt, datamodule = emoji_ckpt
    out = tmp_path / "emb"
    embed_split(OmegaConf.create({"ckpt_path": str(ckpt), "split": "test", "output_dir": str(out),
                                  "device": "cpu", "data": {}, "paths": {"output_dir": str(out)}}))
    split = datamodule.split("test")
    with (out / "test_items.csv").open(encoding="utf-8") as f:
        items = list(csv.DictReader(f))
    assert list(items[0]) == ["index", "label", "class", "design"]
    assert [int(r["label"]) for r in items] == split.labels.tolist()
    assert [r["class"] for r in items] == [split.classes[label] for label in split.labels]
    assert [r["design"] for r in items] == list(split.designs)
    # each (class, design) names one rendering
    assert len({(r["class"], r["design"]) for r in items}) == len(items)
    model = load_model(ckpt).model
    images = torch.stack([datamodule.split_dataset("test")[i]["image"] for i in range(len(items))])
    with torch.no_grad():
        reference = model(images).numpy()
    np.testing.assert_allclose(np.load(out / "test_embeddings.npy"), reference, atol=1e-5)
    np.testing.assert_array_equal(np.load(out / "test_labels.npy"), split.labels)


def test_search_on_an_emoji_checkpoint_finds_each_copy_first(emoji_ckpt, tmp_path):
    ckpt, datamodule = emoji_ckpt
    split = datamodule.split("test")
    gallery, queries = tmp_path / "gallery", tmp_path / "queries"
    gallery.mkdir()
    queries.mkdir()
    rows = range(0, min(len(split.labels), 12))
    for row in rows:
        Image.fromarray(split.images[row]).save(gallery / f"e{row:02d}.png")
    for row in (0, 5):
        shutil.copy(gallery / f"e{row:02d}.png", queries / f"copy_{row:02d}.png")
    result = search_images(ckpt, gallery, queries, k=2, backend="torch", device="cpu")
    assert [Path(result.gallery[int(found[0])]).name for found in result.indices] == ["e00.png", "e05.png"]
    torch.testing.assert_close(result.similarities[:, 0], torch.ones(2), atol=1e-5, rtol=0)
