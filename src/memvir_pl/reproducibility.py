"""Fixing the CPU settings that decide a run's floating-point results.

A CPU run is bit-identical from one launch to the next when the seed, the thread count and the
kernels are the same. Two things change between machines: the thread count (torch defaults to
one thread per core, and a parallel reduction sums in another order with more threads) and the
instruction set the math libraries dispatch to (AVX-512 kernels accumulate in another order than
AVX2 ones). :func:`configure_cpu` fixes both for the current process.
"""

from __future__ import annotations

import os

import torch

# The switches that cap each library's kernels at one instruction set: ATen's own vectorised ops,
# oneDNN (convolutions) and MKL (matrix products, with its conditional numerical reproducibility).
CPU_ISA_SWITCHES: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_CBWR": "AVX512"},
}


def configure_cpu(threads: int | None, isa: str | None) -> dict[str, str]:
    """Fix torch's intra-op thread count and cap the CPU kernels at one instruction set.

    Args:
        threads: threads of torch's intra-op pool (``torch.set_num_threads``); ``None`` keeps
            torch's default (one per core).
        isa: ``"avx2"`` or ``"avx512"``: the most advanced instruction set the kernels may use,
            so that machines with more (e.g. AVX-512) compute as one with exactly that. ``None``
            lets each library pick the best the CPU has. The libraries read the switches once,
            at their first computation: call this before the process computes anything;
            variables already set in the environment win.

    Returns:
        The environment switches in force for the instruction set (empty for ``None``).
    """
    if threads is not None:
        if int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a positive integer or null (torch's default), got {threads!r}.")
        torch.set_num_threads(int(threads))
    if isa is None:
        return {}
    if isa not in CPU_ISA_SWITCHES:
        raise ValueError(
            f"cpu_isa must be one of {sorted(CPU_ISA_SWITCHES)} or null (each library picks the best the "
            f"CPU has), got {isa!r}."
        )
    for name, value in CPU_ISA_SWITCHES[isa].items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in CPU_ISA_SWITCHES[isa]}
