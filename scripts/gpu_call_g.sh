#!/usr/bin/env bash
# GPU call G (2 or 4 GPUs; TP_SIZES picks the runs, e.g. "2 4 1 4nccl"): the peer-memory all-reduce test, then TP scaling 1/2/4 (async engine, peer-memory
# all-reduce), and TP=4 with NCCL alone for comparison.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
nvidia-smi topo -m >> "$OUT/env.txt" 2>&1
step multi_gpu_tests 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -k "peer_memory or dead_rank" -rs
step tp 420 python3 scripts/tp_scaling.py "$OUT/tp.jsonl" ${TP_SIZES:-2 4 1 4nccl}
