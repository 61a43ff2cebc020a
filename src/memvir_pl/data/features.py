"""A frozen backbone's pooled features, computed once per split and kept on disk.

When the backbone does not train (``model.freeze_stages=all``), an image's pooled features
never change, so an epoch needs only the head: :class:`FeatureDataset` serves the features
in place of the images, and :func:`cached_features` computes them once (with the split's
evaluation transform: there is no augmentation in this mode) and keeps them as an ``.npz``
file named by a hash of everything they depend on (the backbone's weights and pooling, the
data, the image size and the transform).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from memvir_pl.data.splits import cache_key, save_npz

log = logging.getLogger(__name__)

#: Bump when the way features are computed changes, so stale caches are not reused.
FEATURE_CACHE_VERSION = 1


class FeatureDataset(Dataset):
    """Pooled features with labels, as batch items ``{"image": (F,) float32, "label", "index"}``
    (plus ``"is_query"`` for query/gallery splits): ``image`` holds the features, so every loop
    that feeds ``batch["image"]`` to the model works unchanged.

    Args:
        features: (N, F) float32.
        labels: (N,) int64 in [0, C).
        is_query: (N,) bool, or ``None`` (all-vs-all retrieval).
    """

    def __init__(self, features: Tensor, labels: np.ndarray | Tensor, is_query: np.ndarray | None = None) -> None:
        if features.ndim != 2 or len(features) != len(labels):
            raise ValueError(
                f"FeatureDataset expects features (N, F) and labels (N,), got {tuple(features.shape)} and "
                f"{tuple(np.shape(labels))}"
            )
        self.features = features
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.is_query = None if is_query is None else torch.as_tensor(np.asarray(is_query), dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        index = torch.as_tensor(list(indices), dtype=torch.int64)
        rows = self.features[index]
        items = [{"image": row, "label": label, "index": i}
                 for row, label, i in zip(rows, self.labels[index], index, strict=True)]
        if self.is_query is not None:
            for item, query in zip(items, self.is_query[index], strict=True):
                item["is_query"] = query
        return items


def extract_features(
    extractor: Callable[[Tensor], Tensor],
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    **loader_kwargs: Any,
) -> Tensor:
    """``extractor(images)`` (B, F) of every item of ``dataset`` in order: (N, F) float32 on the CPU.

    The loader (``loader_kwargs``: e.g. ``num_workers``) has its own generator, so torch's global
    RNG is left as it was.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator(), **loader_kwargs)
    out = []
    with torch.inference_mode():
        for batch in loader:
            out.append(extractor(batch["image"].to(device)).float().cpu())
    if not out:
        raise ValueError("extract_features: the split has no images; check the data set's files and options "
                         "(every split needs at least one image)")
    return torch.cat(out)


def module_digest(module: nn.Module) -> str:
    """SHA-1 of a module's state dict (names, dtypes, shapes and values): the same weights give
    the same digest on every machine."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def array_digest(*arrays: np.ndarray | Sequence[Any] | None) -> str:
    """SHA-1 of arrays' shapes, dtypes and bytes (sequences of strings and ``None`` allowed)."""
    digest = hashlib.sha1()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        value = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def cached_features(
    cache_dir: str | Path | None,
    key: Mapping[str, Any],
    compute: Callable[[], Tensor],
    expected_rows: int,
) -> Tensor:
    """Features from ``cache_dir/features-<hash of key>.npz``, computed by ``compute()`` and saved
    (atomically) when missing; ``cache_dir=None`` computes every time.

    Raises:
        ValueError: the cached or computed array does not have ``expected_rows`` rows.
    """
    payload = {"version": FEATURE_CACHE_VERSION, **key}
    path = None if cache_dir is None else Path(cache_dir) / f"features-{cache_key(payload)}.npz"
    if path is not None and path.is_file():
        with np.load(path) as data:
            features = torch.from_numpy(data["features"])
    else:
        start = time.perf_counter()
        features = compute()
        log.info("pooled features %s computed in %.1f s", tuple(features.shape), time.perf_counter() - start)
        if path is not None:
            save_npz(path, {"features": features.numpy()})
    if len(features) != expected_rows:
        raise ValueError(
            f"features {tuple(features.shape)} do not match the split's {expected_rows} images"
            + (f"; delete the stale cache file {path}" if path is not None else "")
        )
    return features
