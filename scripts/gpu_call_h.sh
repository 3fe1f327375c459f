#!/usr/bin/env bash
# GPU call H (one H100): nano-vllm throughput with the async engine, then transformers on the workload's
# first 64 requests beside nanoinfer on the same 64 (the peer alone needs ~6 minutes: give it the rest).
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step bench 110 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json"
step peer 450 python3 -m nanoinfer.bench --model qwen3-0.6b --peer transformers --peer-requests 64 --json-out "$OUT/peer.json"
