"""The Lightning extensions of memvir-pl: callbacks and loggers, each usable in any ``Trainer``.

============================  ===========================  ==========================================
name                          module                       what it does
============================  ===========================  ==========================================
:class:`MemVirCallback`       ``extensions.memvir``        MemVir's memory and virtual classes
:class:`PreemptionCheckpoint` ``extensions.preemption``    on SIGTERM/SIGUSR1: checkpoint, exit 75
:class:`SplitEvaluation`      ``extensions.split_eval``    another split's metrics at each validation
:class:`EpochHistory`         ``extensions.history``       every validated epoch's metrics, checkpointed
:class:`FigureLogging`        ``extensions.figures``       curves and a retrieval grid at the end of fit
:class:`CSVLogger`            ``extensions.loggers``       Lightning's, appending on a resume
:class:`MLFlowLogger`         ``extensions.loggers``       Lightning's, ``@`` in metric names as ``_at_``
============================  ===========================  ==========================================

Names are imported lazily: ``MemVirCallback`` does not load the logger or figure stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "MemVirCallback": "memvir_pl.extensions.memvir",
    "PreemptionCheckpoint": "memvir_pl.extensions.preemption",
    "SplitEvaluation": "memvir_pl.extensions.split_eval",
    "EpochHistory": "memvir_pl.extensions.history",
    "FigureLogging": "memvir_pl.extensions.figures",
    "CSVLogger": "memvir_pl.extensions.loggers",
    "MLFlowLogger": "memvir_pl.extensions.loggers",
}

__all__ = ["CSVLogger", "EpochHistory", "FigureLogging", "MLFlowLogger", "MemVirCallback",
           "PreemptionCheckpoint", "SplitEvaluation"]

if TYPE_CHECKING:  # pragma: no cover
    from memvir_pl.extensions.figures import FigureLogging
    from memvir_pl.extensions.history import EpochHistory
    from memvir_pl.extensions.loggers import CSVLogger, MLFlowLogger
    from memvir_pl.extensions.memvir import MemVirCallback
    from memvir_pl.extensions.preemption import PreemptionCheckpoint
    from memvir_pl.extensions.split_eval import SplitEvaluation


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memvir_pl.extensions' has no attribute {name!r}")
