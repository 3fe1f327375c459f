#!/usr/bin/env bash
# GPU call D (one H100): nano-vllm's workload with and without async scheduling, on the same card.
LOG=d.log
source "$(dirname "$0")/gpu_common.sh"
step bench 75 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json"
step bench_sync 75 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --no-async-scheduling --json-out "$OUT/bench_sync.json"
