"""Shared by the rendered data sets (glyphs, emoji): class-disjoint splits by a stable hash (of a
class, or of a group of classes kept together), and the atomic ``.npz`` cache they are kept in
(:func:`save_dataclass` / :func:`load_dataclass`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from memvir_pl.files import atomic_write

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.45, "val": 0.15, "test": 0.40}
T = TypeVar("T")


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validated split fractions: keys train/val/test, non-negative, summing to 1."""
    if set(fractions) != set(SPLITS) or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must give train, val and test >= 0, got {fractions}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)}")
    return {name: float(fractions[name]) for name in SPLITS}


def split_of_key(key: str, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> str:
    """The split of a class, from the SHA-1 of its key's UTF-8 encoding (stable everywhere:
    it depends on nothing but the key)."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    bound = 0.0
    for name in SPLITS:
        bound += fractions[name]
        if u < bound:
            return name
    return SPLITS[-1]


def connected_groups(num_items: int, pairs: np.ndarray) -> np.ndarray:
    """(num_items,) int64: the group of each item, as the smallest item index of its group,
    where ``pairs`` (P, 2) of item indices join items (directly or through others); an item in
    no pair is a group of its own. Hash a group's smallest key with :func:`split_of_key` to put
    all of it in one split."""
    parent = np.arange(num_items, dtype=np.int64)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2).tolist():
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)  # the root stays the smallest index
    return np.array([root(i) for i in range(num_items)], dtype=np.int64)


def cache_key(payload: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-1 of ``payload`` as sorted JSON (everything a cache depends on)."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` compressed to ``path`` atomically (a reader never sees half a file)."""
    atomic_write(path, lambda file: np.savez_compressed(file, **arrays))


def _field_kind(hint: Any) -> str:
    """How a dataclass field is stored: "array" (as is), "strings" (a tuple of str) or "json"."""
    origin = typing.get_origin(hint) or hint
    if origin is np.ndarray:
        return "array"
    if origin is tuple and typing.get_args(hint)[:1] == (str,):
        return "strings"
    if origin in (Mapping, dict):
        return "json"
    raise TypeError(f"cannot store a field of type {hint!r} in an .npz cache")


def save_dataclass(obj: Any, path: Path) -> None:
    """Write a data-set dataclass to ``path`` (one array per field, named like it): numpy
    arrays as they are, ``tuple[str, ...]`` as string arrays, mappings as one JSON string."""
    hints = typing.get_type_hints(type(obj))
    arrays = {}
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), _field_kind(hints[f.name])
        arrays[f.name] = value if kind == "array" else np.array(json.dumps(value) if kind == "json" else value)
    save_npz(path, arrays)


def load_dataclass(cls: type[T], path: Path) -> T:
    """Read what :func:`save_dataclass` wrote for a ``cls``."""
    hints = typing.get_type_hints(cls)
    values = {}
    with np.load(path) as data:
        for f in dataclasses.fields(cls):
            kind, array = _field_kind(hints[f.name]), data[f.name]
            if kind == "array":
                values[f.name] = array
            elif kind == "strings":
                values[f.name] = tuple(str(v) for v in array)
            else:
                values[f.name] = json.loads(str(array))
    return cls(**values)
