"""Runs that survive being stopped: checkpoint on signal, exact mid-epoch resume.

- :class:`PreemptionCheckpoint` (a callback) turns SIGTERM / SIGUSR1 (configurable) into a
  checkpoint written after the current optimiser step, then exits with :data:`EXIT_RESUMABLE`.
  It uses Lightning's own stop path: the signal only sets the trainer's SIGTERM flag at a step
  boundary, Lightning's loops raise ``SIGTERMException`` there, and the checkpoint is written in
  ``on_exception`` (as Lightning's ``OnExceptionCheckpoint`` does). Under SLURM it requeues the
  job (``scontrol requeue``) after the checkpoint; a signal handler installed before the run
  (e.g. submitit's) is called after the checkpoint instead. Only fitting writes a checkpoint: a
  signal while testing, validating or predicting leaves ``last.ckpt`` as it is.
- The checkpoint holds the global RNG states (torch, CUDA, numpy, random); the datamodule saves
  the position inside the epoch (:func:`memvir_pl.data.sampler.train_position`), and the batch
  samplers of :mod:`memvir_pl.data.sampler` skip the batches already done.

How checkpoint files are written atomically, checked and found on resume is
:mod:`memvir_pl.checkpoint`'s job.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

#: Exit status of a run stopped by a signal after writing its checkpoint: "stopped, resumable"
#: (sysexits' EX_TEMPFAIL, "temporary failure, the user is invited to retry").
EXIT_RESUMABLE = 75


# ---------------------------------------------------------------------- RNG state
def rng_states() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), numpy and ``random``, as tensors and numbers
    (loadable with ``torch.load(weights_only=True)``)."""
    version, python_state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`rng_states` (CUDA states only where as many devices are visible)."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))


# ---------------------------------------------------------------------- the callback
def _signal_number(name: str | int) -> signal.Signals:
    try:
        return signal.Signals(name) if isinstance(name, int) else signal.Signals[str(name).upper()]
    except (KeyError, ValueError):
        known = sorted(s.name for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP))
        raise ValueError(f"PreemptionCheckpoint: unknown signal {name!r}; use names such as {known[:6]}...") from None


def _request_stop(trainer: pl.Trainer, stop: bool = True) -> None:
    """Set (or clear) the flag Lightning's loops check at step boundaries to raise SIGTERMException.

    Lightning has no public way to ask for this stop: ``trainer.received_sigterm`` is read-only,
    and ``trainer.should_stop`` ends the fit normally (validation and ``on_train_end`` run, no
    exception reaches ``on_exception``), so the run would not stop at the step it was signalled
    at. ``tests/test_lightning_contract.py`` pins the behaviour relied on.
    """
    trainer._signal_connector.received_sigterm = stop


def _any_rank(trainer: pl.Trainer, decision: bool) -> bool:
    """Whether ``decision`` holds on any process (one all-reduce under DDP; the value itself on one).

    Every process must call it at the same point: it is how the ranks agree to stop after the
    same step when a signal reached only some of them, or reached them at different steps.
    """
    if trainer.world_size <= 1:
        return decision
    return trainer.strategy.reduce_boolean_decision(decision, all=False)


def _at_optimizer_step(trainer: pl.Trainer) -> bool:
    """Whether the training batch just done ended an optimiser step (with gradient accumulation,
    the batches before the last of a step only add to the gradients, which a checkpoint does not
    hold: the run stops after the step's last batch instead).

    Lightning's own test decides it (the epoch's last batch steps too, and a strategy may
    accumulate by itself); it is read rather than recomputed so that the two never disagree,
    and ``tests/test_lightning_contract.py`` pins it against ``trainer.global_step``."""
    return not trainer.fit_loop.epoch_loop._should_accumulate()


def slurm_job_id() -> str | None:
    """The SLURM job to requeue (``ARRAYJOB_TASK`` for array jobs), ``None`` outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job(job_id: str) -> int:
    """``scontrol requeue JOB`` (as Lightning's SLURM auto-requeue does); its exit status (127 when
    ``scontrol`` is not found).

    It runs after the checkpoint is written, so a failure only warns (with scontrol's output): the
    checkpoint stays valid and the job can be resubmitted by hand with ``ckpt_path=<last.ckpt>``.
    """
    print(f"memvir_pl: requeueing SLURM job {job_id}", file=sys.stderr, flush=True)
    advice = ("the checkpoint is written; resubmit the job by hand (same run directory, or "
              "ckpt_path=<run>/checkpoints/last.ckpt) to continue")
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    except OSError as error:
        warnings.warn(f"memvir_pl: could not requeue SLURM job {job_id}: scontrol could not be run ({error}); "
                      f"expected SLURM's scontrol on PATH. {advice}.", stacklevel=2)
        return 127
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip() or "no output"
        warnings.warn(f"memvir_pl: `scontrol requeue {job_id}` failed with status {result.returncode}: {output}. "
                      f"Was the job submitted with --requeue? {advice}.", stacklevel=2)
    return result.returncode


class PreemptionCheckpoint(pl.Callback):
    """Checkpoint and exit on SIGTERM / SIGUSR1 after the current optimiser step; resume exactly.

    While training runs, each signal in ``signals`` is deferred to the next step boundary (after the
    optimiser step of the batch in progress, or with ``accumulate_grad_batches`` > 1 of the last
    batch of the step in progress; after validation when one is in progress or due at that batch). There Lightning raises ``SIGTERMException``; this callback then writes
    ``dirpath/filename.ckpt`` (model, optimiser, schedulers, loops with the batch position and the
    loggers' step, callbacks with the MemVir memory, datamodule with the sampler position, and the
    RNG states), and the process exits with :data:`EXIT_RESUMABLE` (75). Resume with
    ``ckpt_path=<that file>`` (``memvir_pl.train``: ``ckpt_path=auto`` finds it by itself).

    After the checkpoint: a handler that was installed for the signal before training (e.g.
    submitit's requeue handler) is called; otherwise, inside a SLURM job and for a signal in
    ``requeue_signals``, the job is requeued with ``scontrol requeue``.

    Under DDP the processes agree at every step boundary (one all-reduce of a stop flag) and all
    stop after the same step, whether the signal reached every process, one of them, or each at
    another step; a process that started others (Lightning's DDP launcher) forwards the signal to
    them. With ``accumulate_grad_batches`` > 1 the run stops only after an optimiser step, never
    with a partly accumulated gradient.

    A signal while testing, validating or predicting writes nothing (the module then holds the
    evaluated weights, not the training state) and exits with 75 too.

    Every checkpoint also stores the global RNG states, restored on load.

    Args:
        dirpath: directory of the checkpoint.
        filename: file name without ``.ckpt`` (``last``: the signal checkpoint replaces last.ckpt).
        signals: signal names (or numbers) that stop the run.
        requeue_signals: those of ``signals`` that requeue a SLURM job (SLURM's ``--signal``
            warning before the time limit); SIGTERM alone (scancel, or a preemption that SLURM
            requeues itself) does not.
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(
        self,
        dirpath: str | Path,
        filename: str = "last",
        signals: Sequence[str | int] = ("SIGTERM", "SIGUSR1"),
        requeue_signals: Sequence[str | int] = ("SIGUSR1",),
    ) -> None:
        super().__init__()
        if not filename:
            raise ValueError("PreemptionCheckpoint: filename must not be empty (e.g. 'last').")
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.signals = [_signal_number(s) for s in signals]
        self.requeue_signals = {_signal_number(s) for s in requeue_signals}
        if not self.requeue_signals <= set(self.signals):
            raise ValueError("PreemptionCheckpoint: requeue_signals must be a subset of signals, got "
                             f"{sorted(s.name for s in self.requeue_signals)} vs {sorted(s.name for s in self.signals)}.")
        self.received: signal.Signals | None = None  # the first signal of this run
        self._before: dict[signal.Signals, Any] = {}  # handlers installed before the run
        self._installed = False
        self._launcher: Any = None  # the DDP launcher that started the other processes (it forwards signals)
        self._stop_agreed = False  # every process agreed to stop after the current step

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / f"{self.filename}{self.FILE_EXTENSION}"

    # ------------------------------------------------------------------ signal handling
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # before Lightning registers its own handlers
            self._before = {s: signal.getsignal(s) for s in self.signals}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = None
        self._stop_agreed = False
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; Lightning's own SIGTERM handling stays
        self._launcher = trainer.strategy.launcher
        for signum in self.signals:
            signal.signal(signum, self._on_signal)
        self._installed = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            print(f"memvir_pl: received {self.received.name}; stopping after the current step to write "
                  f"{self.ckpt_path}", file=sys.stderr, flush=True)
            kill = getattr(self._launcher, "kill", None)
            if callable(kill):  # the DDP processes this one started get the signal too, as Lightning's handler does
                kill(signum)

    def _stop_if_any_rank_received(self, trainer: pl.Trainer) -> None:
        """At a step boundary every process reaches alike: stop there if any process got a signal."""
        if _any_rank(trainer, self.received is not None):
            self._stop_agreed = True
            _request_stop(trainer)

    def _restore_handlers(self) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            for signum, handler in self._before.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._installed = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if _at_optimizer_step(trainer):
            self._stop_if_any_rank_received(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._stop_agreed:  # finish validation first (its metrics are not in checkpoints)
            _request_stop(trainer, False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and _at_optimizer_step(trainer):
            self._stop_if_any_rank_received(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_any_rank_received(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            self._restore_handlers()
            return
        if trainer.state.fn != TrainerFn.FITTING:
            # testing, validating or predicting: the weights in memory are those of the evaluated
            # checkpoint, not the training state, so last.ckpt is left as it is
            self._restore_handlers()
            exception.code = EXIT_RESUMABLE
            if trainer.is_global_zero:
                print(f"memvir_pl: stopped by a signal during trainer.{trainer.state.fn.value}; {self.ckpt_path} is left "
                      f"unchanged; exiting with status {EXIT_RESUMABLE}: run again with ckpt_path={self.ckpt_path} "
                      "to repeat that stage", file=sys.stderr, flush=True)
            return
        trainer.save_checkpoint(self.ckpt_path)
        exception.code = EXIT_RESUMABLE
        self._restore_handlers()
        signum = self.received
        if trainer.is_global_zero:
            print(f"memvir_pl: wrote {self.ckpt_path} (epoch {trainer.current_epoch}, step {trainer.global_step}); "
                  f"exiting with status {EXIT_RESUMABLE}: resume with ckpt_path={self.ckpt_path}",
                  file=sys.stderr, flush=True)
        if signum is None:
            return
        before = self._before.get(signum)
        if callable(before):
            before(signum, None)  # e.g. submitit: pickles the job, requeues it and exits
        elif signum in self.requeue_signals and trainer.is_global_zero and (job := slurm_job_id()) is not None:
            requeue_slurm_job(job)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict["rng"])
