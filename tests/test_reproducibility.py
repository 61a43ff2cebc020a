"""The default CPU run is reproducible: fixed threads, capped kernels, deterministic algorithms."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from memvir_pl.reproducibility import CPU_ISA_SWITCHES, configure_cpu
from memvir_pl.train import train
from tests.hydra_helpers import QUIET, REPO, compose_config

TINY = ["trainer.max_epochs=2", "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2", "data.batch_size=32", "data.eval_batch_size=256",
        "memvir.warmup_epochs=1", "memvir.step_gap=1"]


def _in_fresh_process(code: str, env: dict[str, str] | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in CPU_ISA_SWITCHES["avx2"]}
    result = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(REPO / "src"), **(env or {})},
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_configure_cpu_fixes_threads_and_caps_every_library():
    code = ("import json, os, torch; from memvir_pl.reproducibility import configure_cpu\n"
            "switches = configure_cpu(1, 'avx2')\n"
            "print(json.dumps({'threads': torch.get_num_threads(), 'switches': switches,\n"
            "                  'capability': torch.backends.cpu.get_cpu_capability()}))")
    report = _in_fresh_process(code)
    assert report["threads"] == 1 and report["switches"] == CPU_ISA_SWITCHES["avx2"]
    assert report["capability"] in ("AVX2", "DEFAULT")  # never above the cap
    # a switch the user set in the environment wins over the config
    report = _in_fresh_process(code, {"ONEDNN_MAX_CPU_ISA": "AVX"})
    assert report["switches"]["ONEDNN_MAX_CPU_ISA"] == "AVX"


def test_the_capability_switch_changes_the_arithmetic_so_the_cap_matters():
    # what an unpinned run on another CPU risks: the same product in another instruction set differs in its last bits
    code = ("import json, os, sys, torch; from memvir_pl.reproducibility import configure_cpu\n"
            "configure_cpu(1, None)\n"
            "g = torch.Generator().manual_seed(0)\n"
            "x, w = torch.randn(64, 3, 32, 32, generator=g), torch.randn(32, 3, 3, 3, generator=g)\n"
            "y = torch.nn.functional.conv2d(x, w, padding=1)\n"
            "print(json.dumps({'capability': torch.backends.cpu.get_cpu_capability(), 'sum': float(y.double().sum())}))")
    best = _in_fresh_process(code)
    lowest = _in_fresh_process(code, {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"})
    if best["capability"] == "DEFAULT":
        pytest.skip("this CPU has no vector instruction set above the baseline")
    assert lowest["capability"] == "DEFAULT" and lowest["sum"] != best["sum"]


@pytest.mark.parametrize(("threads", "isa", "message"), [(0, None, "threads must be a positive integer"),
                                                         (None, "sse", "cpu_isa must be one of")])
def test_bad_cpu_settings_are_explained(threads, isa, message):
    with pytest.raises(ValueError, match=message):
        configure_cpu(threads, isa)


@pytest.mark.slow
def test_two_runs_of_the_same_config_give_the_same_numbers(tmp_path):
    threads = torch.get_num_threads()
    try:
        first = train(compose_config([*TINY, *QUIET], tmp_path / "a"))
        second = train(compose_config([*TINY, *QUIET], tmp_path / "b"))
    finally:
        torch.set_num_threads(threads)
    for run in (first, second):
        run.pop("test_checkpoint")  # in each run's own folder
    assert first == second  # every validation and test metric, to the last bit
    assert first["final"]["epoch"] == 2  # MemVir was on in the second epoch


def _vendor() -> str:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
        return next((line.split(":")[1].strip() for line in cpuinfo if line.startswith("vendor_id")), "")


WARNINGS_OF_CONFIGURE = ("import json, warnings, torch; from memvir_pl.reproducibility import configure_cpu\n"
                         "{before}\n"
                         "with warnings.catch_warnings(record=True) as caught:\n"
                         "    warnings.simplefilter('always')\n"
                         "    configure_cpu(1, 'avx2')\n"
                         "print(json.dumps({{'capability': torch.backends.cpu.get_cpu_capability(),\n"
                         "                  'warnings': [str(w.message) for w in caught]}}))")


def test_configure_cpu_warns_when_torch_computed_before_it():
    best = _in_fresh_process("import json, torch; print(json.dumps(torch.backends.cpu.get_cpu_capability()))")
    if best not in ("AVX512",):
        pytest.skip(f"this CPU's best capability is {best}: the avx2 cap changes nothing here")
    late = _in_fresh_process(WARNINGS_OF_CONFIGURE.format(before="torch.ones(1000).sum()"))
    assert late["capability"] == "AVX512"
    assert any("ATen computes with AVX512 although ATEN_CPU_CAPABILITY=avx2" in w for w in late["warnings"])
    early = _in_fresh_process(WARNINGS_OF_CONFIGURE.format(before=""))
    assert early["capability"] == "AVX2" and not any("ATen" in w for w in early["warnings"])


def test_configure_cpu_warns_when_mkl_ignores_the_avx2_branch():
    if not os.path.exists("/proc/cpuinfo") or not torch.backends.mkl.is_available():
        pytest.skip("needs Linux and torch with MKL")
    report = _in_fresh_process(WARNINGS_OF_CONFIGURE.format(before=""))
    mkl = [w for w in report["warnings"] if w.startswith("cpu_isa=avx2: MKL uses")]
    if _vendor() == "AuthenticAMD":  # MKL falls back to AUTO for every branch but COMPATIBLE on AMD
        assert len(mkl) == 1 and "MKL uses the AUTO code path although MKL_CBWR=AVX2" in mkl[0]
    elif _vendor() == "GenuineIntel":
        assert mkl == []
    # a branch MKL honours everywhere is reported as in force
    compatible = _in_fresh_process(WARNINGS_OF_CONFIGURE.format(before=""), {"MKL_CBWR": "COMPATIBLE"})
    assert not any("MKL" in w for w in compatible["warnings"])
