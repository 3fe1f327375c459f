#!/usr/bin/env bash
# GPU call M (one H200): the Triton Gumbel-max sampler (tests on the GPU, micro-benchmark against the
# compiled reference), decode attention with the batch sorted longest first, then nano-vllm's workload.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step sampler_tests 200 python3 -m pytest -q -p no:cacheprovider tests/test_sampler_triton.py
step sampler_bench 120 python3 scripts/sampler_bench.py "$OUT/sampler.json"
step balance 120 python3 scripts/decode_balance.py "$OUT/balance.json"
step bench 150 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json"
