#!/usr/bin/env bash
# GPU call A (one H100): kernel and engine tests, throughput on nano-vllm's workload, batch-1 latency
# with and without CUDA graphs, and profiles of decode steps.
LOG=a.log
source "$(dirname "$0")/gpu_common.sh"
export CUDA_VISIBLE_DEVICES=0
step tests 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention_backends.py tests/test_gpu.py -x -rs
step bench 150 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json"
step lat_graphs 70 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --num-requests 1 --min-prompt 128 --max-prompt 128 --min-output 512 --max-output 512 --temperature 0 --max-num-seqs 8 --json-out "$OUT/lat_graphs.json"
step lat_eager 70 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --num-requests 1 --min-prompt 128 --max-prompt 128 --min-output 512 --max-output 512 --temperature 0 --max-num-seqs 8 --enforce-eager --json-out "$OUT/lat_eager.json"
step profile 90 python3 scripts/profile_decode.py "$OUT/profile.txt"
