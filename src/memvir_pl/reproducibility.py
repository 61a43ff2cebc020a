"""Fixing the CPU settings that decide a run's floating-point results.

A CPU run is bit-identical from one launch to the next when the seed, the thread count and the
kernels are the same. Two things change between machines: the thread count (torch defaults to
one thread per core, and a parallel reduction sums in another order with more threads) and the
instruction set the math libraries dispatch to (AVX-512 kernels accumulate in another order than
AVX2 ones). :func:`configure_cpu` fixes both for the current process, then reads back what the
libraries actually use and warns when a cap is not in force.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from pathlib import Path

import torch

# The switches that cap each library's kernels at one instruction set: ATen's own vectorised ops,
# oneDNN (convolutions) and MKL (matrix products, with its conditional numerical reproducibility).
CPU_ISA_SWITCHES: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_CBWR": "AVX512"},
}


# ATen's capabilities on x86, lowest first (``torch.backends.cpu.get_cpu_capability()``)
ATEN_CAPABILITY_ORDER = ("DEFAULT", "AVX2", "AVX512")
# MKL's code path ("branch") numbers, as mkl_cbwr.h defines them
MKL_CBWR_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
                     9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
_MKL_CBWR_ALL = -1  # ~0: every setting
_MKL_CBWR_STRICT = 0x10000


def mkl_cbwr_mode() -> str | None:
    """The code path MKL uses (``"AUTO"``, ``"COMPATIBLE"``, ``"AVX2"``, ...; ``"OFF"``: no
    conditional numerical reproducibility), read from the MKL linked into torch; ``None`` when it
    cannot be read (torch without MKL, or a build that does not export MKL's service functions)."""
    if not torch.backends.mkl.is_available():
        return None
    try:
        library = next((Path(torch.__file__).parent / "lib").glob("libtorch_cpu.*"))
        get = ctypes.CDLL(str(library)).mkl_serv_cbwr_get
    except (StopIteration, OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    branch = get(_MKL_CBWR_ALL)
    return MKL_CBWR_BRANCHES.get(branch & ~_MKL_CBWR_STRICT, f"unknown ({branch})")


def cpu_switches_not_in_force() -> list[str]:
    """What the ISA switches in the environment ask for and the libraries do not do, one sentence
    each (empty when ATen's capability is at most ``ATEN_CPU_CAPABILITY`` and MKL uses the
    ``MKL_CBWR`` branch; a library whose state cannot be read is not checked, nor is oneDNN)."""
    problems = []
    wanted = os.environ.get("ATEN_CPU_CAPABILITY", "").upper()
    actual = torch.backends.cpu.get_cpu_capability()
    if wanted in ATEN_CAPABILITY_ORDER and actual in ATEN_CAPABILITY_ORDER \
            and ATEN_CAPABILITY_ORDER.index(actual) > ATEN_CAPABILITY_ORDER.index(wanted):
        problems.append(
            f"ATen computes with {actual} although ATEN_CPU_CAPABILITY={wanted.lower()}: torch computed "
            "something before the switch was set, and ATen reads it only once. Call configure_cpu (or set "
            "the variable in the environment) before the process computes anything."
        )
    wanted_mkl = os.environ.get("MKL_CBWR", "").split(",")[0].strip().upper()
    mode = mkl_cbwr_mode() if wanted_mkl else None
    if mode is not None and mode != wanted_mkl:
        problems.append(
            f"MKL uses the {mode} code path although MKL_CBWR={os.environ['MKL_CBWR']}: MKL honours an "
            "instruction-set branch such as AVX2 only on Intel CPUs (elsewhere it falls back to AUTO, the "
            "CPU's best), and reads the variable once, at its first call. Matrix products may then differ "
            "in their last bits from those of a machine where the cap holds. MKL_CBWR=COMPATIBLE in the "
            "environment is honoured on every vendor, but computes other numbers than the AVX2 branch."
        )
    return problems


def configure_cpu(threads: int | None, isa: str | None) -> dict[str, str]:
    """Fix torch's intra-op thread count and cap the CPU kernels at one instruction set.

    Args:
        threads: threads of torch's intra-op pool (``torch.set_num_threads``); ``None`` keeps
            torch's default (one per core).
        isa: ``"avx2"`` or ``"avx512"``: the most advanced instruction set the kernels may use,
            so that machines with more (e.g. AVX-512) compute as one with exactly that. ``None``
            lets each library pick the best the CPU has. The libraries read the switches once,
            at their first computation: call this before the process computes anything;
            variables already set in the environment win. Afterwards ATen's capability and
            MKL's code path are read back, with a warning for each switch not in force
            (:func:`cpu_switches_not_in_force`).

    Returns:
        The environment switches set for the instruction set (empty for ``None``).
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
    for problem in cpu_switches_not_in_force():
        warnings.warn(f"cpu_isa={isa}: {problem}", RuntimeWarning, stacklevel=2)
    return {name: os.environ[name] for name in CPU_ISA_SWITCHES[isa]}
