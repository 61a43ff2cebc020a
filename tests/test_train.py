"""The training pipeline through Hydra: configs compose, experiments run on fixtures, entry points work."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from memvir_pl.checkpoint import CONFIG_KEY, load_checkpoint, restore_run
from memvir_pl.inference import load_model
from memvir_pl.models import EmbeddingNet
from memvir_pl.train import train
from tests import data_fixtures
from tests.hydra_helpers import EXPERIMENTS, QUIET, REPO, compose_config, run_module

FIXTURE_WRITERS = {"cub": data_fixtures.write_cub, "cars": data_fixtures.write_cars,
                   "sop": data_fixtures.write_sop, "inshop": data_fixtures.write_inshop}
TINY_GLYPHS = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
               "+trainer.limit_test_batches=2", "data.batch_size=32", "data.eval_batch_size=256"]


def test_every_experiment_composes_with_the_published_settings(tmp_path):
    assert {"cars", "cars_baseline", "cars_proxy_nca", "cub", "sop", "inshop"} <= set(EXPERIMENTS)
    for name in EXPERIMENTS:
        cfg = compose_config([f"+experiment={name}"], tmp_path)
        assert cfg.task_name == name
        assert cfg.model.backbone == "bninception" and cfg.model.embedding_dim == 512
        assert cfg.data.batch_size == 128 and cfg.module.proxy_lr == 1e-2
        optimizer = cfg.module.optimizer
        assert (optimizer._target_, optimizer.eps, optimizer.weight_decay) == ("torch.optim.Adam", 0.01, 1e-4)
    cars = compose_config(["+experiment=cars"], tmp_path)
    assert (cars.memvir.num_steps, cars.memvir.step_gap, cars.memvir.warmup_epochs) == (45, 10, 40)
    assert cars.loss.scale == 23.0 and cars.trainer.max_epochs == 2000 and cars.module.lr_schedule == "constant"
    baseline = compose_config(["+experiment=cars_baseline"], tmp_path)
    assert baseline.memvir is None and baseline.trainer.max_epochs == 130
    assert (baseline.module.lr_decay_step, baseline.module.lr_decay_stop) == (50, 50)
    nca = compose_config(["+experiment=cars_proxy_nca"], tmp_path)
    assert nca.loss._target_.endswith("ProxyNCA") and (nca.memvir.num_steps, nca.memvir.step_gap) == (20, 25)
    assert compose_config(["+experiment=sop"], tmp_path).memvir.proxy_mode == "saving"


def test_paper_experiments_follow_the_official_recipe(tmp_path):
    """fp32, nn.Linear's head init, the last partial batch kept, evaluation every 10 (MemVir) / 5 (baselines) epochs."""
    for name in ("cars", "cars_baseline", "cars_proxy_nca", "cub", "sop", "inshop"):
        cfg = compose_config([f"+experiment={name}"], tmp_path)
        assert cfg.trainer.precision == "32-true", name
        assert cfg.model.init == "default" and cfg.data.drop_last is False, name
        assert cfg.check_every == (5 if name == "cars_baseline" else 10), name
        assert cfg.trainer.check_val_every_n_epoch == cfg.check_every, name
    amp = compose_config(["+experiment=cars", "trainer.precision=16-mixed"], tmp_path)
    assert amp.trainer.precision == "16-mixed"  # mixed precision stays available by override


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(FIXTURE_WRITERS))
def test_experiment_fast_dev_run_on_a_fixture(tmp_path, dataset):
    root = tmp_path / dataset
    FIXTURE_WRITERS[dataset](root)
    experiment = "cars" if dataset == "cars" else dataset
    cfg = compose_config([f"+experiment={experiment}", f"data.root={root}", "trainer=cpu", "model=small_cnn",
                          "data.image_size=32", "data.batch_size=4", "data.eval_batch_size=8", "data.num_workers=0",
                          "data.pin_memory=false", "memvir.warmup_epochs=0", "memvir.step_gap=0",
                          "+trainer.fast_dev_run=2", "module.k=[1,2]", "test=false", *QUIET], tmp_path)
    metrics = train(cfg)
    assert 0.0 <= metrics["final"]["val/recall@1"] <= 1.0
    assert (tmp_path / "metrics.json").is_file()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One short default run (glyphs, small CNN, MemVir) through the real command line."""
    cwd = tmp_path_factory.mktemp("run")
    result = run_module("memvir_pl.train", [*TINY_GLYPHS, "memvir.warmup_epochs=0", "memvir.step_gap=0",
                                            "hydra.run.dir=out", *QUIET], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recall@1" in result.stdout and "map@r" in result.stdout  # the final table
    return cwd / "out"


def test_default_run_writes_metrics_json(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics) >= {"final", "best", "test"}
    for key in ("recall@1", "recall@8", "r_precision", "map@r"):
        assert 0.0 <= metrics["test"][f"test/{key}"] <= 1.0
        assert 0.0 <= metrics["final"][f"val/{key}"] <= 1.0
    assert metrics["best"]["epoch"] == 1
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()


def test_eval_reproduces_the_test_metrics_of_the_checkpoint(trained_run, tmp_path):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    result = run_module("memvir_pl.eval", [f"ckpt_path={metrics['test_checkpoint']}", "hydra.run.dir=eval",
                                           "+trainer.limit_test_batches=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["split"] == "test"
    for key, value in metrics["test"].items():
        assert report["metrics"][key] == pytest.approx(value, abs=1e-6), key


def test_resume_from_last_ckpt_continues_epoch_optimiser_and_memory(trained_run, tmp_path):
    last = trained_run / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=True)
    cfg = compose_config([*TINY_GLYPHS, "trainer.max_epochs=2", "memvir.warmup_epochs=0", "memvir.step_gap=0",
                          f"ckpt_path={last}", "test=false", *QUIET], tmp_path)
    metrics = train(cfg)
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert metrics["final"]["epoch"] == 2 and after["epoch"] == 1 and before["epoch"] == 0
    assert after["global_step"] == 2 * before["global_step"] == 6
    memory = lambda ckpt: ckpt["callbacks"]["MemVirCallback"]["memory"]  # noqa: E731
    assert memory(before)["pushes"] == 3 and memory(after)["pushes"] == 6
    adam_steps = lambda ckpt: int(next(iter(ckpt["optimizer_states"][0]["state"].values()))["step"])  # noqa: E731
    assert adam_steps(before) == 3 and adam_steps(after) == 6


def test_last_ckpt_is_the_last_epoch_even_when_the_best_is_earlier(tmp_path):
    # the lowest epoch number is "best": the first epoch stays best while training goes on
    cfg = compose_config([*TINY_GLYPHS, "trainer.max_epochs=3", "memvir.warmup_epochs=0", "memvir.step_gap=0",
                          "callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min", *QUIET],
                         tmp_path)
    metrics = train(cfg)
    checkpoints = tmp_path / "checkpoints"
    best = torch.load(metrics["test_checkpoint"], weights_only=True)
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 9
    assert best["epoch"] < last["epoch"]  # the test ran on the monitored best, not on last.ckpt
    assert Path(metrics["test_checkpoint"]).parent == checkpoints
    assert sorted(p.name for p in checkpoints.iterdir()) == [Path(metrics["test_checkpoint"]).name, "last.ckpt"]


@pytest.fixture(scope="module")
def sparse_validation_run(tmp_path_factory) -> tuple[Path, dict]:
    """3 epochs validated every 2 (epoch 2 only), MemVir on from the start; its directory and metrics."""
    out = tmp_path_factory.mktemp("every2")
    cfg = compose_config([*TINY_GLYPHS, "trainer.max_epochs=3", "check_every=2", "memvir.warmup_epochs=0",
                          "memvir.step_gap=0", *QUIET], out)
    return out, train(cfg)


def test_last_ckpt_is_written_every_epoch_whatever_check_every(sparse_validation_run):
    out, metrics = sparse_validation_run
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 9  # epoch 3, not epoch 2 (the validated one)
    assert last["callbacks"]["MemVirCallback"]["memory"]["pushes"] == 9
    assert metrics["final"]["epoch"] == 2


def test_best_checkpoint_holds_the_weights_only_and_still_evaluates(sparse_validation_run):
    out, metrics = sparse_validation_run
    best_path = Path(metrics["test_checkpoint"])
    best = torch.load(best_path, weights_only=True)
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert best_path.name == "epoch_001.ckpt" and best["epoch"] == 1
    assert "callbacks" not in best and "optimizer_states" not in best  # no MemVir memory, no Adam state
    assert CONFIG_KEY in best and set(best["state_dict"]) == set(last["state_dict"])
    assert "memory" in last["callbacks"]["MemVirCallback"] and last["optimizer_states"]
    assert best_path.stat().st_size < (out / "checkpoints" / "last.ckpt").stat().st_size
    assert set(metrics["test"]) >= {"test/recall@1", "test/map@r"}  # the test ran on it
    # embedding with it: the model rebuilt from it is the checkpoint's network
    model = load_model(best_path).model
    weights = {k.removeprefix("model."): v for k, v in best["state_dict"].items() if k.startswith("model.")}
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    images = torch.rand(4, 3, 32, 32)
    _, _, module = restore_run(load_checkpoint(best_path))
    with torch.no_grad():
        torch.testing.assert_close(module.model.eval()(images), model(images))


def test_checkpoint_sizes_benchmark_matches_the_files(sparse_validation_run, monkeypatch):
    spec = importlib.util.spec_from_file_location("checkpoint_sizes", REPO / "benchmarks" / "checkpoint_sizes.py")
    sizes = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "checkpoint_sizes", sizes)  # its dataclass looks itself up there
    spec.loader.exec_module(sizes)
    out, metrics = sparse_validation_run
    num_classes = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["loss.proxies"].shape[0]
    setup = sizes.Setup("glyphs", num_classes, num_steps=5, step_gap=0, proxy_mode="exact", batch_size=32,
                        embedding_dim=128, backbone="small_cnn")
    expected = sizes.checkpoint_bytes(EmbeddingNet("small_cnn", embedding_dim=128), setup)
    assert expected["memory"] > 0 and expected["optimizer"] > 0
    for name, path in (("best", Path(metrics["test_checkpoint"])), ("last", out / "checkpoints" / "last.ckpt")):
        # the tensors' bytes plus a little metadata (config, counters, zip headers)
        assert 0 < path.stat().st_size - expected[name] < 100_000, name


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the process's memory map (Linux)")
def test_tools_map_the_checkpoint_instead_of_reading_it(sparse_validation_run):
    out, _ = sparse_validation_run
    last = out / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    assert str(last) in Path("/proc/self/maps").read_text()  # the memory is read only when used
    assert checkpoint["callbacks"]["MemVirCallback"]["memory"]["pushes"] == 9


def test_resume_keeps_the_epoch_history_for_final_and_best(sparse_validation_run, tmp_path):
    out, before = sparse_validation_run
    cfg = compose_config([*TINY_GLYPHS, "trainer.max_epochs=4", "check_every=2", "memvir.warmup_epochs=0",
                          "memvir.step_gap=0", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "test=false",
                          *QUIET], tmp_path)
    metrics = train(cfg)
    history = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["EpochHistory"]
    assert [row["epoch"] for row in history["epochs"]] == [2, 4]
    assert history["epochs"][0] == before["final"]  # the epoch validated before the resume
    assert metrics["final"] == history["epochs"][1]
    assert metrics["best"] == max(history["epochs"], key=lambda row: row["val/recall@1"])


@pytest.mark.slow
def test_multirun_of_two_jobs(tmp_path):
    result = run_module("memvir_pl.train", ["-m", "memvir.num_steps=1,2", *TINY_GLYPHS, "test=false",
                                            "hydra.sweep.dir=multi", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        metrics = json.loads((tmp_path / "multi" / job / "metrics.json").read_text())
        assert "val/recall@1" in metrics["final"]


def test_missing_dataset_names_the_expected_files(tmp_path):
    cfg = compose_config(["+experiment=cub", f"data.root={tmp_path / 'nowhere'}", "trainer=cpu", *QUIET], tmp_path)
    with pytest.raises(FileNotFoundError, match=r"images\.txt"):
        train(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [("loss=triplet", "Could not find 'loss/triplet'"),
     ("module.lrr=0.1", "Could not override 'module.lrr'"),
     ("experiment=cars", "Could not override 'experiment'")],
)
def test_bad_overrides_are_explained(tmp_path, override, message):
    with pytest.raises(Exception, match=message):
        compose_config([override], tmp_path)


def test_bad_module_settings_are_explained(tmp_path):
    cfg = compose_config(["module.lr_schedule=step", *TINY_GLYPHS, *QUIET], tmp_path)
    with pytest.raises(ValueError, match="lr_decay_step"):
        train(cfg)


@pytest.mark.slow
def test_optuna_search_of_two_trials_reports_its_best(tmp_path):
    result = run_module("memvir_pl.train", ["+hparams_search=optuna", "hydra.sweeper.n_trials=2",
                                            "hydra.sweeper.sampler.n_startup_trials=2", *TINY_GLYPHS,
                                            "hydra.sweep.dir=optuna", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    best = (tmp_path / "optuna" / "optimization_results.yaml").read_text()
    trials = [json.loads((tmp_path / "optuna" / job / "metrics.json").read_text()) for job in ("0", "1")]
    best_value = max(t["best"]["val/recall@1"] for t in trials)
    assert "memvir.num_steps" in best and f"best_value: {best_value}" in best
