"""Atomic file writes: a reader, or a run killed mid-write, never sees half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def current_umask() -> int:
    """The process's file-mode creation mask (e.g. ``0o022``), read without changing it where the
    system reports it (Linux ``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore it
    os.umask(mask)
    return mask


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], object], *, durable: bool = False, single_writer: bool = False
) -> None:
    """Write ``path`` through ``write(file)`` so that it is replaced whole or not at all.

    ``write`` fills a temporary file in the same directory (``.NAME.*.tmp``), which is then
    ``os.replace``-d over ``path``: a kill at any moment leaves either the old file or the new one
    (and at worst a stray temporary file). ``durable`` also fsyncs the file before the rename and
    the directory after it, so the new file survives a power loss (checkpoints).
    ``single_writer``: no other process writes ``path`` (a run's checkpoints), so temporary files
    of ``path`` found before writing were left by a killed writer and are removed; shared caches,
    which several jobs may write at once, leave them. The file gets the mode an ordinary new file gets under the
    process's umask (``0o644`` under ``022``, ``0o664`` under ``002``), so a shared group can
    read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if single_writer:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer that was killed
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it owner-only; give it an ordinary file's mode
        with os.fdopen(fd, "wb") as file:
            write(file)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
