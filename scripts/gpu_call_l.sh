#!/usr/bin/env bash
# GPU call L (one H200): what bounds the nano-vllm workload here. Bandwidth references, decode-attention
# launch configurations and grid orders, decode-size GEMMs; then the run's step timeline and top kernels.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step sweep 240 python3 scripts/decode_kernel_sweep.py "$OUT/sweep.json"
step diagnose 240 python3 scripts/diagnose_throughput.py "$OUT/diag"
