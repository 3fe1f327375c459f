#!/usr/bin/env bash
# GPU call I (one H200): the GPU test suite after the CPU fast-path changes (the sampler's greedy path is
# shared), then nano-vllm's workload and batch-1 latency on this card for the H200 column of the docs.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step gpu_tests 300 python3 -m pytest -q -m gpu tests/ -p no:cacheprovider
step bench 120 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json"
step batch1 90 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --num-requests 1 --min-prompt 128 \
    --max-prompt 128 --min-output 512 --max-output 512 --temperature 0 --max-num-seqs 8 --json-out "$OUT/batch1.json"
