#!/usr/bin/env bash
# The GPU check: training throughput of genexp, of the same module under a bare Lightning Trainer
# and of a hand-written loop (their ratios), for the VAE, the DCGAN and the diffusion U-Net, in
# 32-true, bf16-mixed and 16-mixed, then in bf16-mixed with channels_last, with the data preloaded
# to the GPU and with torch.compile; peak GPU memory of each. Under 5 minutes on one GPU: entries
# started after 200 s are written as skipped, and the JSON is rewritten after every entry.
#
#   scripts/device_check.sh [OUT.json]            # on a machine with a CUDA GPU
#   DRY_RUN=1 scripts/device_check.sh [OUT.json]  # tiny sizes on the CPU: 32-true and bf16-mixed
#
# OUT defaults to outputs/benchmarks/device_check.json (a markdown table beside it, .md);
# PYTHON picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs/benchmarks/device_check.json}"
args=(scripts/benchmark.py --device-check --out "$out")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    args+=(--dry-run)
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
# The Python side keeps to its own budget; this limit only guards against a hang.
timeout 290 "${PYTHON:-python}" "${args[@]}"
