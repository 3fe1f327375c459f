#!/usr/bin/env bash
# GPU call E (one H100): where the nano-vllm workload's time goes, then the GPU tests.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step diagnose 240 python3 scripts/diagnose_throughput.py "$OUT"
step tests 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ -rs -x
