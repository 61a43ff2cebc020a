"""Atomic file writes: whole or not at all, and never another writer's temporary file removed."""

from __future__ import annotations

import os

import pytest

from memvir_pl.files import atomic_write


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "cache.npz"
    atomic_write(path, lambda file: file.write(b"old"))

    def fail(file):
        file.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npz"]


@pytest.mark.parametrize("single_writer", [False, True])
def test_only_a_single_writer_removes_temporaries_it_finds(tmp_path, single_writer):
    """A shared cache may be written by two jobs at once: the other job's temporary file must stay;
    a run's own checkpoint has one writer, so what it finds was left by a killed one."""
    path = tmp_path / "last.ckpt"
    other = tmp_path / ".last.ckpt.abc123.tmp"
    other.write_bytes(b"another writer's half file")
    atomic_write(path, lambda file: file.write(b"new"), durable=single_writer, single_writer=single_writer)
    assert path.read_bytes() == b"new"
    assert other.exists() is not single_writer


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_the_file_gets_an_ordinary_files_mode(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        atomic_write(tmp_path / "f.bin", lambda file: file.write(b"x"))
    finally:
        os.umask(before)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == mode
