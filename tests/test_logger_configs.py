"""The loggers of conf/logger: each one runs, gets the whole config as hyper-parameters and the
end-of-fit figures, with the real packages (W&B offline, MLflow's local file store)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from memvir_pl.config import run_id
from memvir_pl.extensions.figures import FigureLogging
from memvir_pl.extensions.history import EpochHistory
from memvir_pl.train import train
from memvir_pl.viz import figure_to_array, plot_validation_curves
from tests.hydra_helpers import compose_config

TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=1", "data.batch_size=32", "data.eval_batch_size=256",
        "memvir.warmup_epochs=0", "memvir.step_gap=0", "callbacks.rich_progress_bar=null", "test=false"]


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


@pytest.fixture
def local_mlflow(monkeypatch, tmp_path):
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # a SQLite store puts the artifacts in ./mlruns
    return uri


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "wandb", "mlflow", "many"])
def test_every_logger_config_runs_a_fast_dev_run(logger, tmp_path, request):
    if logger in ("wandb", "many"):
        request.getfixturevalue("offline_wandb")
    if logger in ("mlflow", "many"):
        request.getfixturevalue("local_mlflow")
    cfg = compose_config([f"logger={logger}", "+trainer.fast_dev_run=true", *TINY], tmp_path)
    expected = {"many": {"csv", "tensorboard", "wandb", "mlflow"}}.get(logger, {logger})
    assert set(cfg.logger) == expected
    assert 0.0 <= train(cfg)["final"]["val/recall@1"] <= 1.0


def test_tensorboard_gets_the_whole_config_and_both_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config(["logger=tensorboard", *TINY], tmp_path)
    train(cfg)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"figures/validation_curves", "figures/retrieval_grid"} <= set(events.Tags()["images"])
    hparams = yaml.safe_load((tmp_path / "tensorboard" / "hparams.yaml").read_text())
    assert hparams["memvir"]["num_steps"] == cfg.memvir.num_steps and hparams["data"]["dataset"] == "glyphs"
    assert hparams["seed"] == 0 and hparams["model"]["_target_"] == cfg.model._target_
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {"validation_curves.png", "retrieval_grid.png"}
    # the HPARAMS tab: the flattened config, with the validation metrics as its columns
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    tab = session.session_start_info.hparams
    assert tab["memvir/num_steps"].number_value == cfg.memvir.num_steps
    assert tab["data/dataset"].string_value == "glyphs"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/recall@1", "val/r_precision", "val/map@r"}
    assert "hp_metric" not in events.Tags()["scalars"]
    assert "val/map@r" in events.Tags()["scalars"]  # the tab's column reads these values


def test_mlflow_gets_the_config_as_params_and_the_figures_as_artifacts(tmp_path, local_mlflow):
    from mlflow.tracking import MlflowClient

    cfg = compose_config(["logger=mlflow", "memvir.num_steps=3", *TINY], tmp_path / "run")
    train(cfg)
    client = MlflowClient(tracking_uri=local_mlflow)
    (run,) = client.search_runs([client.get_experiment_by_name("memvir-pl").experiment_id])
    params = run.data.params
    assert params["memvir/num_steps"] == "3" and params["seed"] == "0" and params["data/dataset"] == "glyphs"
    assert params["memvir/parts"] == str(cfg.memvir.parts)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert artifacts == {"figures/validation_curves.png", "figures/retrieval_grid.png"}
    # MLflow does not allow "@" in keys: written as "_at_" (Lightning alone would drop it)
    assert {"val/recall_at_1", "val/map_at_r", "val/r_precision"} <= set(run.data.metrics)


def test_wandb_run_id_comes_from_the_run_directory_so_a_resumed_run_stays_one_run(tmp_path, offline_wandb):
    run_dir = tmp_path / "run"
    cfg = compose_config(["logger=wandb", "memvir.num_steps=3", *TINY], run_dir)
    assert cfg.logger.wandb.id == run_id(str(run_dir)) and cfg.logger.wandb.resume == "allow"
    train(cfg)
    resumed = compose_config(["logger=wandb", "memvir.num_steps=3", *TINY, "trainer.max_epochs=2",
                              f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], run_dir)
    assert resumed.logger.wandb.id == cfg.logger.wandb.id
    assert train(resumed)["final"]["epoch"] == 2  # resumed in its own run directory
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(p.name.endswith(f"-{cfg.logger.wandb.id}") for p in runs)
    records = (runs[0] / f"run-{cfg.logger.wandb.id}.wandb").read_bytes()  # the offline run's record log
    assert b"num_steps" in records and b"glyphs" in records and b"parts" in records
    images = {p.name.split("_")[0] for p in (runs[0] / "files" / "media" / "images" / "figures").glob("*.png")}
    assert images == {"validation", "retrieval"}
    assert run_id(str(tmp_path / "other")) != cfg.logger.wandb.id


def test_figures_can_be_turned_off_and_are_skipped_without_images(tmp_path):
    cfg = compose_config(["logger=csv", "callbacks.figures=null", *TINY], tmp_path)
    train(cfg)
    assert not (tmp_path / "figures").exists()
    with pytest.raises(ValueError, match="queries must be an int >= 1"):
        FigureLogging(queries=0)


def test_validation_curves_draw_every_metric_in_percent():
    history = EpochHistory()
    history.epochs = [{"epoch": e, "val/recall@1": 0.1 * e, "val/map@r": 0.05 * e} for e in (1, 2, 3)]
    figure = plot_validation_curves(history.epochs)
    (ax,) = figure.axes
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines["val/recall@1"] == pytest.approx([10, 20, 30]) and lines["val/map@r"] == pytest.approx([5, 10, 15])
    image = figure_to_array(figure, dpi=50)
    assert image.shape == (180, 320, 3) and image.dtype.name == "uint8"
    with pytest.raises(ValueError, match="at least one validated epoch"):
        plot_validation_curves([])


def test_the_figure_callback_is_on_in_the_default_config(tmp_path):
    cfg = compose_config([], tmp_path)
    assert cfg.callbacks.figures._target_ == "memvir_pl.extensions.figures.FigureLogging"
    assert Path(cfg.callbacks.figures.dirpath) == Path(cfg.paths.output_dir) / "figures"
