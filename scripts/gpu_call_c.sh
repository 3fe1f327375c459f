#!/usr/bin/env bash
# GPU call C (4 x H100), three lanes at once:
#   GPUs 0-1: TP scaling TP=1, TP=2 (then TP=4 on all four once the other lanes are done)
#   GPU 2:    GPU tests; nano-vllm throughput with and without async scheduling; batch-1 latency; profiles
#   GPU 3:    the transformers peers on the workload's first 64 requests
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
L1="--model qwen3-0.6b --peer none --num-requests 1 --min-prompt 128 --max-prompt 128 --min-output 512 --max-output 512 --temperature 0 --max-num-seqs 8"
( LOG=lane2.log; export CUDA_VISIBLE_DEVICES=2
  step tests 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention_backends.py tests/test_gpu.py -rs
  step bench 120 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json"
  step bench_sync 120 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --no-async-scheduling --json-out "$OUT/bench_sync.json"
  step lat_graphs 60 python3 -m nanoinfer.bench $L1
  step lat_eager 60 python3 -m nanoinfer.bench $L1 --enforce-eager
  step profile 120 python3 scripts/profile_decode.py "$OUT/profile.txt" ) &
( LOG=lane3.log; export CUDA_VISIBLE_DEVICES=3
  step peer 480 python3 -m nanoinfer.bench --model qwen3-0.6b --peer transformers --peer-requests 64 --json-out "$OUT/peer.json" ) &
( LOG=lane1.log; export CUDA_VISIBLE_DEVICES=0,1
  step tp12 300 python3 scripts/tp_scaling.py "$OUT/tp.jsonl" 1 2 ) &
wait
LOG=lane1.log step tp4 150 python3 scripts/tp_scaling.py "$OUT/tp.jsonl" 4
