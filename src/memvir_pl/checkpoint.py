"""Checkpoints: writing them atomically, checking and finding the one to resume, and rebuilding a
trained run from one.

- :class:`AtomicCheckpointIO` (Lightning's checkpoint IO) writes each checkpoint to a temporary
  file in the same directory, fsyncs it and renames it over the old one: a kill during the
  write leaves the old file.
- :func:`resume_checkpoint` resolves ``ckpt_path`` (``auto`` = the run's own ``last.ckpt`` when
  present), :func:`check_checkpoint` rejects a truncated or corrupt file, naming it, and
  :func:`check_resume_config` refuses a ``last.ckpt`` written under another training config.
- :func:`load_checkpoint` reads one (memory-mapped) and :func:`restore_run` rebuilds its
  datamodule and DMLModule (:func:`memvir_pl.inference.load_model` rebuilds the model alone).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from omegaconf import DictConfig, OmegaConf

from memvir_pl.config import flatten_config, resolve_path
from memvir_pl.files import atomic_write

CONFIG_KEY = "memvir_pl_config"

#: The config entries whose values change what a run trains (dotted keys; a group covers its keys)...
TRAINING_KEYS = ("data", "model", "loss", "module", "memvir", "trainer", "seed", "threads", "cpu_isa")
#: ... except these, which change where things are read and written or how a run reports, not the weights.
NOT_TRAINING_KEYS = frozenset({
    "data.root", "data.num_workers", "data.pin_memory", "data.eval_batch_size", "data.feature_cache_dir",
    "data.options.cache_dir", "trainer.default_root_dir", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    "trainer.limit_val_batches", "trainer.limit_test_batches", "trainer.plugins",
})


#: ``module.optimizer`` names of run configs saved before the optimiser became an object config,
#: and the torch class each one built (with ``module.eps``, not for SGD, and ``module.weight_decay``).
LEGACY_OPTIMIZERS = {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW", "sgd": "torch.optim.SGD"}


def upgrade_saved_config(config: dict[str, Any]) -> dict[str, Any]:
    """A saved run config (a plain dict) in today's layout. A checkpoint written when
    ``module.optimizer`` was a name, with ``module.eps`` and ``module.weight_decay`` beside it,
    gets the object config that builds the same optimiser (``conf/module/optimizer/``), so that
    it still loads, resumes and passes :func:`check_resume_config`. Anything else is returned as is."""
    module = config.get("module")
    if not isinstance(module, dict) or not isinstance(module.get("optimizer"), str):
        return config
    module = dict(module)
    name = module.pop("optimizer")
    eps, weight_decay = module.pop("eps", 0.01), module.pop("weight_decay", 1e-4)
    optimizer: dict[str, Any] = {"_target_": LEGACY_OPTIMIZERS[name], "_partial_": True}
    optimizer.update({"momentum": 0.0} if name == "sgd" else {"eps": eps})
    module["optimizer"] = {**optimizer, "weight_decay": weight_decay}
    return {**config, "module": module}


class ResumeConfigError(ValueError):
    """``ckpt_path=auto`` found a checkpoint written under another training configuration."""


def training_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The :data:`TRAINING_KEYS` (less :data:`NOT_TRAINING_KEYS`) on which two resolved configs
    (plain dicts) differ, one ``"key: SAVED in the checkpoint, CURRENT now"`` line each, sorted."""
    absent = "<absent>"
    flat_saved, flat_current = {}, {}
    for key in TRAINING_KEYS:
        flat_saved.update(flatten_config(saved.get(key, absent), key))
        flat_current.update(flatten_config(current.get(key, absent), key))
    differing = []
    for key in sorted(flat_saved.keys() | flat_current.keys()):
        if key in NOT_TRAINING_KEYS or any(key.startswith(f"{k}.") for k in NOT_TRAINING_KEYS):
            continue
        before, now = flat_saved.get(key, absent), flat_current.get(key, absent)
        if before != now:
            differing.append(f"{key}: {before!r} in the checkpoint, {now!r} now")
    return differing


def check_resume_config(path: str | Path, cfg: DictConfig) -> None:
    """Raise :class:`ResumeConfigError` unless the checkpoint at ``path`` was written under the
    same training configuration as ``cfg`` (:func:`training_differences` is empty)."""
    checkpoint = read_checkpoint(path)
    current = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
               for key in TRAINING_KEYS if key in cfg}
    if CONFIG_KEY not in checkpoint:
        differing = [f"the checkpoint has no saved config ('{CONFIG_KEY}'): it was not written by memvir_pl.train"]
    else:
        differing = training_differences(upgrade_saved_config(checkpoint[CONFIG_KEY]), current)
    if differing:
        raise ResumeConfigError(
            f"ckpt_path=auto found {path}, but it was written under another training configuration:\n  "
            + "\n  ".join(differing)
            + f"\nResuming it would continue another run. Give this run its own directory (hydra.run.dir=...), "
            f"start it afresh with ckpt_path=null, or resume that checkpoint anyway with ckpt_path={path}."
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of an existing file, memory-mapped: a tensor is read from disk only
    when used (a look at the config does not read the weights, memory or optimiser state)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; a clear error when the file is missing or was not written by memvir_pl.train.

    The file is memory-mapped: a tensor is read from disk only when used, so rebuilding the model
    from ``last.ckpt`` does not read its MemVir memory or optimiser state.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt "
            "(or epoch_NNN.ckpt) of a memvir_pl.train run."
        )
    checkpoint = read_checkpoint(path)
    if CONFIG_KEY not in checkpoint:
        raise ValueError(
            f"{path} has no '{CONFIG_KEY}' entry: it was not written by memvir_pl.train, so the model and "
            "data cannot be rebuilt from it. Use a checkpoint from a `python -m memvir_pl.train` run."
        )
    return checkpoint


def saved_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The run's config, with pretrained-weight loading off (the weights come from the checkpoint)."""
    cfg = OmegaConf.create(upgrade_saved_config(checkpoint[CONFIG_KEY]))
    for key, value in (("pretrained", False), ("weights", None)):
        if key in cfg.model:
            cfg.model[key] = value
    return cfg


# ---------------------------------------------------------------------- writing, checking and finding checkpoints
class CorruptCheckpointError(ValueError):
    """A checkpoint file that is truncated or damaged."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that never leaves a partial ``path`` and survives a power loss once
    it returns (:func:`memvir_pl.files.atomic_write` with ``durable=True``)."""
    atomic_write(path, lambda file: torch.save(obj, file), durable=True, single_writer=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic local writes (:func:`atomic_torch_save`).

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the
    system temp directory: when that is another filesystem (tmpfs ``/tmp``, a node-local disk)
    the final move is a copy, and a kill during it leaves a truncated checkpoint; nothing is
    fsynced either. Remote paths (``s3://`` ...) keep Lightning's behaviour.
    Use: ``Trainer(plugins=[AtomicCheckpointIO()])`` (``conf/trainer/cpu.yaml`` does).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)


def check_checkpoint(path: str | Path) -> None:
    """Raise :class:`CorruptCheckpointError` naming ``path`` unless it is a complete torch checkpoint
    (a zip archive whose every member passes its CRC check; reads the file once)."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise CorruptCheckpointError(
            f"checkpoint {path} is truncated or not a torch checkpoint ({error}); it was probably cut "
            "short by a kill or a full disk. Resume from an earlier checkpoint of the run (e.g. "
            "checkpoints/epoch_NNN.ckpt) or start the run again."
        ) from error
    if damaged is not None:
        raise CorruptCheckpointError(
            f"checkpoint {path} is damaged: its entry {damaged!r} fails the CRC check. Resume from an "
            "earlier checkpoint of the run (e.g. checkpoints/epoch_NNN.ckpt) or start the run again."
        )


def resume_checkpoint(ckpt_path: str | None, own_last: str | Path) -> str | None:
    """The checkpoint a run resumes from, checked: ``None``/``""`` = none, ``"auto"`` = ``own_last``
    (the run's own ``last.ckpt``) when it exists (a requeued job), else none; otherwise the given
    path (relative to where the command was started)."""
    if not ckpt_path:
        return None
    if ckpt_path == "auto":
        if not Path(own_last).is_file():
            return None
        path = str(own_last)
    else:
        path = resolve_path(ckpt_path)
        assert path is not None
    check_checkpoint(path)
    return path


def restore_run(
    checkpoint: dict[str, Any], data_overrides: DictConfig | dict | None = None
) -> tuple[DictConfig, pl.LightningDataModule, pl.LightningModule]:
    """The run's config, its datamodule (set up) and the DMLModule with the checkpoint's weights.

    ``data_overrides`` are merged into the saved data config (e.g. a new ``root``).
    """
    from memvir_pl.train import build_run

    cfg = saved_config(checkpoint)
    if data_overrides:
        cfg.data = OmegaConf.merge(cfg.data, data_overrides)
    datamodule, module = build_run(cfg)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    return cfg, datamodule, module
