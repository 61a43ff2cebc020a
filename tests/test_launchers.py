"""Scale-out through Hydra's submitit launcher: SLURM configs matched to the DDP trainer, a local run."""

from __future__ import annotations

import json

import pytest

from tests.hydra_helpers import QUIET, compose_config, run_module


def test_the_slurm_launcher_asks_for_the_ddp_trainers_nodes_and_gpus(tmp_path):
    cfg = compose_config(["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=4", "trainer.devices=8",
                          "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=1440", "+experiment=cars"],
                         tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (4, 8, 8)
    assert (launcher.partition, launcher.timeout_min) == ("gpu", 1440)
    assert (cfg.trainer.strategy, cfg.trainer.num_nodes, cfg.trainer.devices) == ("ddp", 4, 8)
    assert cfg.trainer.accelerator == "gpu"


@pytest.mark.slow
def test_a_two_job_multirun_through_the_submitit_local_launcher(tmp_path):
    result = run_module("memvir_pl.train", [
        "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "seed=0,1",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1", "data.batch_size=32", "data.eval_batch_size=256",
        "hydra.sweep.dir=sweep", *QUIET], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    finals = [json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())["final"] for job in ("0", "1")]
    assert all(f["epoch"] == 1 for f in finals) and finals[0] != finals[1]  # two seeds, two runs
    assert len(list((tmp_path / "sweep" / ".submitit").iterdir())) >= 2  # each job went through submitit
