"""Runs that survive being killed: signal checkpoints, exact mid-epoch resume, atomic and checked files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from memvir_pl.checkpoint import CorruptCheckpointError, atomic_torch_save, resume_checkpoint
from memvir_pl.data import ClassBalancedBatchSampler, DMLDataModule, ShuffledBatchSampler
from memvir_pl.extensions.preemption import EXIT_RESUMABLE
from memvir_pl.train import train
from tests.hydra_helpers import QUIET, REPO, compose_config
from tests.test_data_datamodule import SMALL_GLYPHS

# the glyph default, small: 2 epochs of 8 steps, MemVir from the first step with a block every 2 steps
SOAK = ["trainer.max_epochs=2", "+trainer.limit_train_batches=8", "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2", "data.batch_size=64", "data.eval_batch_size=256",
        "memvir.warmup_epochs=0", "memvir.step_gap=1", "seed=3", "+trainer.enable_progress_bar=false", *QUIET]
STEPS_PER_EPOCH = 8


# ---------------------------------------------------------------------- samplers and data
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("glyph_cache")


def test_resumed_sampler_yields_the_rest_of_the_epoch_with_the_same_seeds():
    labels = np.repeat(np.arange(20), 6)
    for make in (lambda **kw: ClassBalancedBatchSampler(labels, 12, 3, seed=4, **kw),
                 lambda **kw: ShuffledBatchSampler(len(labels), 12, seed=4, **kw)):
        straight = make()
        straight.set_epoch(2)
        epoch = list(straight)
        resumed = make(resume={"epoch": 2, "batches_done": 3})
        resumed.set_epoch(2)
        assert len(resumed) == len(epoch)  # Lightning counts the whole epoch
        rest = list(resumed)
        assert rest == epoch[3:] and [b.seed for b in rest] == [b.seed for b in epoch[3:]]
        assert list(resumed) == epoch  # only the first iteration of the epoch is shortened
        resumed.set_epoch(3)
        straight.set_epoch(3)
        assert list(resumed) == list(straight)


def test_training_batches_depend_on_seed_and_epoch_only(cache_dir):
    """The epoch-boundary inexactness of resumed runs: the augmentation drew from torch's global RNG
    (not in checkpoints) and the plain shuffle's order from how many epochs the loader had made."""
    options = {**SMALL_GLYPHS, "cache_dir": str(cache_dir)}

    def second_epoch(m_per_class, global_seed, epochs_before):
        torch.manual_seed(global_seed)
        loader = DMLDataModule(batch_size=16, m_per_class=m_per_class, seed=5, options=options).train_dataloader()
        for epoch in epochs_before:  # a loader that made earlier epochs, or a fresh one (a resumed run)
            loader.batch_sampler.set_epoch(epoch)
            next(iter(loader))
        loader.batch_sampler.set_epoch(1)
        return next(iter(loader))

    for m_per_class in (None, 4):
        straight = second_epoch(m_per_class, 0, [0])
        resumed = second_epoch(m_per_class, 123, [])
        assert torch.equal(straight["index"], resumed["index"])
        assert torch.equal(straight["image"], resumed["image"])


# ---------------------------------------------------------------------- checkpoint files
def _small_checkpoint(path: Path) -> dict:
    state = {"state_dict": {"w": torch.arange(50_000, dtype=torch.float32)}, "epoch": 3}
    torch.save(state, path)
    return state


def test_truncated_or_damaged_checkpoint_is_named(tmp_path):
    good = tmp_path / "last.ckpt"
    _small_checkpoint(good)
    assert resume_checkpoint(str(good), tmp_path / "unused.ckpt") == str(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"truncated\.ckpt is truncated"):
        resume_checkpoint(str(truncated), tmp_path / "unused.ckpt")
    damaged = tmp_path / "damaged.ckpt"
    middle = len(data) // 2
    damaged.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    with pytest.raises(CorruptCheckpointError, match=r"damaged\.ckpt is damaged.*CRC"):
        resume_checkpoint(str(damaged), tmp_path / "unused.ckpt")
    # auto: the run's own last.ckpt when present, else a fresh start
    assert resume_checkpoint("auto", good) == str(good)
    assert resume_checkpoint("auto", tmp_path / "missing.ckpt") is None
    assert resume_checkpoint(None, good) is None


def test_train_refuses_a_truncated_checkpoint_before_training(tmp_path, monkeypatch):
    truncated = tmp_path / "cut.ckpt"
    _small_checkpoint(tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    truncated.write_bytes(data[:100])
    cfg = compose_config([*SOAK, f"ckpt_path={truncated}"], tmp_path / "run")

    def build_run(cfg):
        raise AssertionError("data and model were built before the checkpoint was checked")

    monkeypatch.setattr("memvir_pl.train.build_run", build_run)
    with pytest.raises(CorruptCheckpointError, match=str(truncated)):
        train(cfg)


KILL_DURING_WRITE = textwrap.dedent("""
    import io, os, shutil, signal, sys
    import hydra, torch
    from memvir_pl.config import compose_config
    path = sys.argv[1]
    cfg = compose_config([], os.path.dirname(path))
    io_plugin = hydra.utils.instantiate(cfg.trainer).strategy.checkpoint_io  # the configured checkpoint IO
    io_plugin.save_checkpoint({"w": torch.zeros(300_000)}, path)
    real_save, real_copy = torch.save, shutil.copyfile

    def die_half_way(data, out):
        out.write(data[: len(data) // 2])
        out.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def save(obj, f, *args, **kwargs):  # killed while the checkpoint bytes go to a file
        if isinstance(f, io.BytesIO):
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        die_half_way(buffer.getvalue(), f)

    def copyfile(src, dst, *args, **kwargs):  # killed while a temporary file is copied into place
        with open(src, "rb") as source, open(dst, "wb") as target:
            die_half_way(source.read(), target)

    torch.save, shutil.copyfile = save, copyfile
    io_plugin.save_checkpoint({"w": torch.ones(300_000)}, path)
""")


def test_a_kill_during_the_checkpoint_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    shm = Path("/dev/shm")
    # a temp directory on another filesystem, as on many clusters (Lightning's own save then copies)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TMPDIR": str(shm if shm.is_dir() else tmp_path)}
    result = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(path)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(300_000))  # the old, whole file
    atomic_torch_save({"w": torch.ones(3)}, path)  # the next save clears what the killed writer left
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


# ---------------------------------------------------------------------- the soak test
def _run(run_dir: Path, cwd: Path, extra: list[str], kill: tuple[str, int] | None = None,
         rank: int | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m memvir_pl.train`` on SOAK + ``extra``, killed at ``kill`` (on DDP process ``rank`` only
    when given); a run without a kill must succeed unless ``check`` is False."""
    args = [*SOAK, f"hydra.run.dir={run_dir}", *extra]
    if kill is not None:
        args += ["+callbacks.kill._target_=tests.preemption_helpers.SignalAt", f"+callbacks.kill.point={kill[0]}",
                 f"+callbacks.kill.signum={int(kill[1])}"]
        if rank is not None:
            args.append(f"+callbacks.kill.rank={rank}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
           "MEMVIR_CACHE": str(cwd / ".cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "memvir_pl.train", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    if kill is None and check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _chain(run_dir: Path, cwd: Path, kills: list[tuple[str, int]], resume: str) -> list[int]:
    """Start the run, kill it at each point in turn, resuming every time; then let it finish."""
    codes = []
    extra: list[str] = []
    for kill in kills:
        codes.append(_run(run_dir, cwd, extra, kill).returncode)
        extra = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}" if resume == "path" else "ckpt_path=auto"]
        assert resume == "auto" or (run_dir / "checkpoints" / "last.ckpt").is_file()
    _run(run_dir, cwd, extra)
    return codes


def _final_state(run_dir: Path) -> dict:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scores = {name: {"best": state["best_model_score"], "current": state["current_score"],
                     "best_file": Path(state["best_model_path"]).name}
              for name, state in checkpoint["callbacks"].items() if name.startswith("ModelCheckpoint")}
    return {"params": checkpoint["state_dict"], "memory": checkpoint["callbacks"]["MemVirCallback"]["memory"],
            "optimizer": checkpoint["optimizer_states"], "schedulers": checkpoint["lr_schedulers"],
            "global_step": checkpoint["global_step"], "checkpoint_scores": scores,
            # the whole of metrics.json: "final" and "best" span the epochs before each resume (the epoch
            # history travels in the checkpoint); the tested checkpoint by file name (run folders differ)
            "metrics": {**metrics, "test_checkpoint": Path(metrics["test_checkpoint"]).name}}


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_soak_killed_runs_end_bit_identical_to_an_uninterrupted_run(tmp_path):
    """SIGTERM at 4 points (mid-step at random steps, the epoch's last batch, during validation), each
    time resumed with ckpt_path=<last.ckpt>; SIGKILL twice (before the first checkpoint, mid-epoch 2),
    resumed with ckpt_path=auto from the last complete checkpoint: the final parameters, MemVir memory,
    optimiser and scheduler states and metrics.json equal those of an uninterrupted run, bit for bit."""
    rng = random.Random(13)
    phases = ("batch_start", "backward", "optimizer")
    first, second = sorted(rng.sample(range(1, STEPS_PER_EPOCH - 1), 2))
    sigterm = [(f"{rng.choice(phases)}:0:{first}", signal.SIGTERM),
               (f"{rng.choice(phases)}:0:{second}", signal.SIGTERM),
               (f"backward:0:{STEPS_PER_EPOCH - 1}", signal.SIGTERM),  # the epoch's last batch
               ("val:1:1", signal.SIGTERM)]  # during validation (epoch 2's)
    sigkill = [("optimizer:0:2", signal.SIGKILL), (f"{rng.choice(phases)}:1:{rng.randrange(1, 7)}", signal.SIGKILL)]
    (tmp_path / "reference").mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        reference = pool.submit(_run, tmp_path / "reference" / "run", tmp_path / "reference", [])
        killed_by_term = pool.submit(_chain, tmp_path / "term", tmp_path, sigterm, "path")
        reference.result()
        killed_by_kill = pool.submit(_chain, tmp_path / "kill", tmp_path / "reference", sigkill, "auto")
        assert killed_by_term.result() == [EXIT_RESUMABLE] * len(sigterm)
        assert killed_by_kill.result() == [-signal.SIGKILL] * len(sigkill)
    expected = _final_state(tmp_path / "reference" / "run")
    assert expected["global_step"] == 2 * STEPS_PER_EPOCH and expected["memory"]["pushes"] == 2 * STEPS_PER_EPOCH
    _assert_same(_final_state(tmp_path / "term"), expected, "SIGTERM x4")
    _assert_same(_final_state(tmp_path / "kill"), expected, "SIGKILL x2")


# ---------------------------------------------------------------------- DDP
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
       "trainer.deterministic=true"]


@pytest.mark.slow
@pytest.mark.ddp
def test_a_signal_to_one_ddp_process_stops_both_after_the_same_step(tmp_path):
    """2 processes (gloo): SIGTERM to rank 0 only, then (another run) to rank 1 only, mid-step in epoch 1.
    Both processes stop after the same step, the job exits with 75 and one last.ckpt holds the position of
    both; resumed on 2 processes, each run ends bit-identical to an uninterrupted one. The same mid-epoch
    checkpoint is refused on 1 process (2 -> 1), and a 1-process one on 2 processes (1 -> 2), with an
    error that names both counts, and the refused resume leaves the checkpoint as it was."""
    (tmp_path / "reference").mkdir()
    _run(tmp_path / "reference" / "run", tmp_path / "reference", DDP)
    expected = _final_state(tmp_path / "reference" / "run")
    assert expected["global_step"] == 2 * STEPS_PER_EPOCH
    for rank in (0, 1):
        run_dir = tmp_path / f"rank{rank}"
        stopped = _run(run_dir, tmp_path, DDP, kill=("backward:0:3", signal.SIGTERM), rank=rank)
        assert stopped.returncode == EXIT_RESUMABLE, stopped.stderr[-3000:]
        last = run_dir / "checkpoints" / "last.ckpt"
        at_signal = torch.load(last, weights_only=True)
        assert at_signal["global_step"] == 4  # batch 3 was the 4th step of each process
        assert at_signal["DMLDataModule"]["train_position"] == {"epoch": 0, "batches_done": 4, "num_replicas": 2,
                                                                "global_batches_done": 8}
        if rank == 1:  # 2 -> 1 processes: refused before training, the checkpoint untouched
            written = last.read_bytes()
            single = _run(run_dir, tmp_path, [f"ckpt_path={last}"], check=False)
            assert single.returncode != 0
            assert "by 2 training process(es)" in single.stderr and "this run has 1" in single.stderr, \
                single.stderr[-3000:]
            assert last.read_bytes() == written
        _run(run_dir, tmp_path, [*DDP, "ckpt_path=auto"])
        _assert_same(_final_state(run_dir), expected, f"SIGTERM to rank {rank}")
    one = tmp_path / "one"  # 1 -> 2 processes
    assert _run(one, tmp_path, [], kill=("backward:0:3", signal.SIGTERM)).returncode == EXIT_RESUMABLE
    double = _run(one, tmp_path, [*DDP, f"ckpt_path={one / 'checkpoints' / 'last.ckpt'}"], check=False)
    assert double.returncode != 0
    assert "by 1 training process(es)" in double.stderr and "this run has 2" in double.stderr, double.stderr[-3000:]


def test_a_mid_epoch_position_is_refused_on_another_process_count():
    labels = np.repeat(np.arange(20), 6)
    position = {"epoch": 2, "batches_done": 3, "num_replicas": 2, "global_batches_done": 6}

    def epoch_two(make, **kwargs) -> list:
        sampler = make(**kwargs)
        sampler.set_epoch(2)
        return list(sampler)

    for make in (lambda **kw: ClassBalancedBatchSampler(labels, 12, 3, seed=4, **kw),
                 lambda **kw: ShuffledBatchSampler(len(labels), 12, seed=4, **kw)):
        whole = epoch_two(make, num_replicas=2, rank=1)
        assert epoch_two(make, resume=position, num_replicas=2, rank=1) == whole[3:]
        for world in (1, 4):
            with pytest.raises(ValueError, match=f"by 2 training process.*this run has {world}"):
                make(resume=position, num_replicas=world, rank=0)
        legacy = {"epoch": 2, "batches_done": 3}  # written before the count was saved: taken as this run's
        assert epoch_two(make, resume=legacy, num_replicas=4, rank=0) == epoch_two(make, num_replicas=4, rank=0)[3:]


# ---------------------------------------------------------------------- SLURM requeue
@pytest.mark.parametrize("submitit", [False, True])
def test_sigusr1_in_a_slurm_job_checkpoints_then_requeues(tmp_path, monkeypatch, submitit):
    """SLURM's --signal=USR1@N: the step finishes, last.ckpt is written, then the job is requeued with
    ``scontrol requeue`` or, when a handler was installed before the run (submitit's), by that handler."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    handled: list[int] = []
    before = signal.signal(signal.SIGUSR1, (lambda signum, frame: handled.append(signum)) if submitit
                           else signal.SIG_DFL)
    cfg = compose_config([*SOAK, "test=false", "+callbacks.kill._target_=tests.preemption_helpers.SignalAt",
                          "+callbacks.kill.point=backward:0:2", f"+callbacks.kill.signum={int(signal.SIGUSR1)}"],
                         tmp_path / "run")
    try:
        with pytest.raises(SystemExit) as stopped:
            train(cfg)
        assert signal.getsignal(signal.SIGUSR1) is not None  # handlers are given back
    finally:
        signal.signal(signal.SIGUSR1, before)
    assert stopped.value.code == EXIT_RESUMABLE
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["DMLDataModule"]["train_position"] == {"epoch": 0, "batches_done": 3, "num_replicas": 1,
                                                             "global_batches_done": 3}
    if submitit:
        assert handled == [signal.SIGUSR1] and not calls.exists()
    else:
        assert calls.read_text().split() == ["requeue", "4242"]


def test_sigterm_while_testing_leaves_last_ckpt_as_fitting_wrote_it(tmp_path, monkeypatch):
    """trainer.test runs on the best checkpoint's weights: a signal there must not save them as last.ckpt."""
    import pytorch_lightning as pl

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    written_by_fit: list[bytes] = []
    original_test = pl.Trainer.test

    def test_after_copying_last(trainer, *args, **kwargs):
        written_by_fit.append(last.read_bytes())
        return original_test(trainer, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "test", test_after_copying_last)
    cfg = compose_config([*SOAK, "trainer.max_epochs=1", "+callbacks.kill._target_=tests.preemption_helpers.SignalAt",
                          "+callbacks.kill.point=test:0:0", f"+callbacks.kill.signum={int(signal.SIGTERM)}"],
                         tmp_path / "run")
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    assert stopped.value.code == EXIT_RESUMABLE
    assert len(written_by_fit) == 1 and last.read_bytes() == written_by_fit[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_checkpoints_get_an_ordinary_files_mode_under_the_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        atomic_torch_save({"w": torch.ones(3)}, tmp_path / "last.ckpt")
        atomic_torch_save({"w": torch.zeros(3)}, tmp_path / "last.ckpt")  # replacing an existing file too
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(before)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == mode == (tmp_path / "plain").stat().st_mode & 0o777


def test_a_failed_or_missing_scontrol_warns_with_its_output(tmp_path, monkeypatch):
    from memvir_pl.extensions.preemption import requeue_slurm_job

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'scontrol: error: Requeue of job 4242 not allowed' >&2\nexit 1\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.warns(UserWarning, match=r"scontrol requeue 4242` failed with status 1: scontrol: error: Requeue "
                                         r"of job 4242 not allowed\..*resubmit"):
        assert requeue_slurm_job("4242") == 1
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.warns(UserWarning, match=r"could not requeue SLURM job 4242: scontrol could not be run"):
        assert requeue_slurm_job("4242") == 127


def test_auto_resume_refuses_a_last_ckpt_of_another_training_configuration(tmp_path, monkeypatch):
    """A fixed run directory reused with another config: ckpt_path=auto must not continue that run."""
    from omegaconf import OmegaConf

    from memvir_pl.checkpoint import ResumeConfigError

    run = tmp_path / "run"
    written = compose_config(SOAK, run)
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"memvir_pl_config": OmegaConf.to_container(written, resolve=True)}, run / "checkpoints" / "last.ckpt")

    class Built(Exception):
        pass

    def build_run(cfg):
        raise Built

    monkeypatch.setattr("memvir_pl.train.build_run", build_run)
    changed = compose_config([*SOAK, "seed=4", "module.lr=0.01", "data.num_workers=1"], run)
    with pytest.raises(ResumeConfigError) as refused:
        train(changed)
    message = str(refused.value)
    assert "module.lr: 0.001 in the checkpoint, 0.01 now" in message and "seed: 3 in the checkpoint, 4 now" in message
    assert "data.seed: 3 in the checkpoint, 4 now" in message  # the interpolated copy too
    assert "num_workers" not in message  # where data is read from does not change training
    assert f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in message
    # the same training config (other loaders, another logger) resumes; so does the explicit path
    for overrides in (["data.num_workers=1", "logger=none"],
                      ["seed=4", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]):
        with pytest.raises(Built):
            train(compose_config([*SOAK, *overrides], run))


def test_a_checkpoint_saved_with_an_optimizer_name_resumes_and_loads_as_the_same_optimiser(tmp_path, monkeypatch):
    """Run configs saved when module.optimizer was a name ("adam", with module.eps and
    module.weight_decay beside it) are upgraded to the object config that builds the same optimiser."""
    from omegaconf import OmegaConf

    from memvir_pl.checkpoint import saved_config, upgrade_saved_config

    run = tmp_path / "run"
    for name, target in (("adam", "torch.optim.Adam"), ("adamw", "torch.optim.AdamW"), ("sgd", "torch.optim.SGD")):
        current = compose_config([*SOAK, f"module/optimizer={name}"], run)
        legacy = OmegaConf.to_container(current, resolve=True)
        legacy["module"] = {**{k: v for k, v in legacy["module"].items() if k != "optimizer"},
                            "optimizer": name, "weight_decay": 1e-4, "eps": 0.01}
        upgraded = upgrade_saved_config(legacy)
        assert upgraded["module"] == OmegaConf.to_container(current.module, resolve=True)
        assert upgraded["module"]["optimizer"]["_target_"] == target
        assert saved_config({"memvir_pl_config": legacy}).module.optimizer == current.module.optimizer
    assert upgrade_saved_config(upgraded) == upgraded  # today's layout: unchanged

    class Built(Exception):
        pass

    def build_run(cfg):
        raise Built

    (run / "checkpoints").mkdir(parents=True)
    torch.save({"memvir_pl_config": legacy}, run / "checkpoints" / "last.ckpt")  # sgd, as saved before
    monkeypatch.setattr("memvir_pl.train.build_run", build_run)
    with pytest.raises(Built):  # ckpt_path=auto finds no difference in the training configuration
        train(compose_config([*SOAK, "module/optimizer=sgd"], run))


def test_sigterm_mid_accumulation_stops_after_the_step_and_resumes_exactly(tmp_path):
    """accumulate_grad_batches=2: a SIGTERM on the first batch of a step (batch 3 of the epoch) stops after the
    step's second batch, where the checkpoint holds everything; the resumed run ends as an uninterrupted one."""
    accumulate = [*SOAK, "trainer.max_epochs=1", "+trainer.accumulate_grad_batches=2", "test=false"]
    train(compose_config(accumulate, tmp_path / "reference"))
    with pytest.raises(SystemExit) as stopped:
        train(compose_config([*accumulate, "+callbacks.kill._target_=tests.preemption_helpers.SignalAt",
                              "+callbacks.kill.point=batch_start:0:2", f"+callbacks.kill.signum={int(signal.SIGTERM)}"],
                             tmp_path / "killed"))
    assert stopped.value.code == EXIT_RESUMABLE
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    at_signal = torch.load(last, weights_only=True)
    assert at_signal["global_step"] == 2  # batches 0-1 and 2-3 are the first two optimiser steps
    assert at_signal["DMLDataModule"]["train_position"] == {"epoch": 0, "batches_done": 4, "num_replicas": 1,
                                                            "global_batches_done": 4}
    train(compose_config([*accumulate, f"ckpt_path={last}"], tmp_path / "killed"))

    def final(run: str) -> dict:
        checkpoint = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
        return {"params": checkpoint["state_dict"], "optimizer": checkpoint["optimizer_states"],
                "memory": checkpoint["callbacks"]["MemVirCallback"]["memory"], "step": checkpoint["global_step"]}

    expected = final("reference")
    assert expected["step"] == STEPS_PER_EPOCH // 2
    _assert_same(final("killed"), expected, "accumulated")
