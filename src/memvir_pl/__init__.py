"""memvir-pl: MemVir (memory-based virtual classes) for deep metric learning on Lightning.

Top-level names are imported lazily, so ``import memvir_pl.losses`` or
``import memvir_pl.metrics`` does not pay for Lightning or the data stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "MemVirCallback": "memvir_pl.extensions.memvir",
    "VirtualClassMemory": "memvir_pl.memory",
    "DMLModule": "memvir_pl.module",
    "RetrievalMetrics": "memvir_pl.metrics",
}

__all__ = ["DMLModule", "MemVirCallback", "RetrievalMetrics", "VirtualClassMemory"]

if TYPE_CHECKING:  # pragma: no cover
    from memvir_pl.extensions.memvir import MemVirCallback
    from memvir_pl.memory import VirtualClassMemory
    from memvir_pl.metrics import RetrievalMetrics
    from memvir_pl.module import DMLModule


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memvir_pl' has no attribute {name!r}")
