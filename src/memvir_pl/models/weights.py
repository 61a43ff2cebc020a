"""Loading backbone weights: public URLs through the torch hub cache, or a local file.

``pretrained=True`` downloads once into ``<torch hub dir>/checkpoints/`` (``$TORCH_HOME``,
default ``~/.cache/torch/hub``); ``weights=/path/to/file.pth`` (Hydra: ``model.weights=...``)
reads a local state dict instead. Loading is strict: every key and shape must match.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torch.hub import load_state_dict_from_url

_SHOWN = 5  # how many offending keys an error message lists


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could neither be found in the cache nor downloaded."""


def hub_cache_path(url: str) -> Path:
    """Where ``torch.hub`` keeps (or would keep) the file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def download_state_dict(url: str, *, check_hash: bool = False) -> dict[str, torch.Tensor]:
    """State dict from ``url`` via the torch hub cache (downloaded on first use).

    Raises:
        WeightsUnavailableError: the file is not cached and the download failed (e.g. offline);
            the message names the URL, the cache path and the ``model.weights`` override.
    """
    try:
        return load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=check_hash, weights_only=True
        )
    except OSError as err:
        raise WeightsUnavailableError(
            f"could not download pretrained weights from {url} ({type(err).__name__}: {err}). "
            f"Either place the file at {hub_cache_path(url)} (the torch hub cache; set "
            "$TORCH_HOME to move it), or pass a local copy with model.weights=/path/to/file.pth, "
            "or train from scratch with model.pretrained=false."
        ) from err


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict (a mapping of names to tensors) saved with ``torch.save``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file holds something other than a flat state dict.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"weights file {file} does not exist; model.weights must point to a state dict "
            "saved with torch.save(model.state_dict(), path)"
        )
    obj = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        hint = (" It looks like a training checkpoint: save checkpoint['state_dict'] instead."
                if isinstance(obj, Mapping) and "state_dict" in obj else "")
        raise ValueError(
            f"{file} does not hold a state dict (a mapping of parameter names to tensors) but "
            f"a {type(obj).__name__}.{hint}"
        )
    return dict(obj)


def _listed(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Copy ``state_dict`` into ``module``; every key and shape must match.

    BatchNorm ``num_batches_tracked`` counters missing from old checkpoints (saved before
    PyTorch 0.4.1, e.g. the BN-Inception one) keep the module's value.

    Raises:
        ValueError: missing or unexpected keys, or shape mismatches; lists the first few of each
            and names ``source``.
    """
    expected = module.state_dict()
    given = dict(state_dict)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in given:
            given[key] = value
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in given and given[k].shape != v.shape]
    problems = [f"{name} ({len(keys)}): {_listed(keys)}" for name, keys in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatches, file vs model", reshaped)) if keys]
    if problems:
        raise ValueError(
            f"weights from {source} do not match {type(module).__name__} (which expects "
            f"{len(expected)} entries such as {', '.join(list(expected)[:3])}): "
            + "; ".join(problems)
            + ". model.weights must be a state dict of this same architecture."
        )
    module.load_state_dict(given, strict=True)
