#!/usr/bin/env bash
# GPU check of the retrieval metrics (about 3 minutes on one GPU).
# Compares RetrievalMetrics with the torch CUDA backend and the faiss GPU backend
# against pytorch-metric-learning's AccuracyCalculator (k="max_bin_count") at
# CUB, CARS196 and SOP test-set sizes (time, peak memory, agreement of values),
# then runs the CUDA metric tests. Usage: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: no CUDA device is visible to torch (torch.cuda.is_available() is False)." >&2
    echo "Run it on a machine with an NVIDIA GPU and a CUDA build of torch." >&2
    exit 1
fi
python - <<'PY'
import torch
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
try:
    import faiss
    print("faiss", faiss.__version__, "GPUs seen by faiss:", faiss.get_num_gpus(),
          "(0: the faiss runner falls back to faiss CPU; install a faiss GPU build to check it)")
except ImportError:
    print("faiss is not installed: the faiss and PML runners will fail")
PY

# Same comparison as on CPU; PML's own device choice is CUDA when available.
timeout 150 python benchmarks/bench_metrics.py --device cuda --sizes cub,cars,sop --runners torch,faiss,pml
timeout 60 python -m pytest -q tests/test_metrics.py -k cuda
