#!/usr/bin/env bash
# GPU call F (one H100): the nano-vllm workload's throughput and timeline, the transformers peer on its
# first 64 requests (same process, async engine), then the GPU tests.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step diagnose 150 python3 scripts/diagnose_throughput.py "$OUT" --no-kernels
step peer 330 python3 -m nanoinfer.bench --model qwen3-0.6b --peer transformers --peer-requests 64 --json-out "$OUT/peer.json"
step tests 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs -x
