#!/usr/bin/env bash
# GPU call Q (for the next session; any kind): the session-6 changes (Triton sampler, fused attention
# prologue, longest-first decode order, shared rotary table) where they were not yet measured.
#   one GPU : nano-vllm's workload (the H100 target when an H100 is lent), batch-1 latency, the slice vs
#             transformers
#   2+ GPUs : TP scaling (1, 2 and, with 4 GPUs, 4) on the qwen3-8b shape
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
GPUS=$(nvidia-smi -L | wc -l)
step bench 150 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json"
step batch1 90 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --num-requests 1 --min-prompt 128 \
    --max-prompt 128 --min-output 512 --max-output 512 --temperature 0 --max-num-seqs 8 --json-out "$OUT/batch1.json"
if [ "$GPUS" -ge 2 ]; then
  SIZES="1 2"; [ "$GPUS" -ge 4 ] && SIZES="1 2 4"
  step tp 420 python3 scripts/tp_scaling.py "$OUT/tp.jsonl" $SIZES
else
  step peer 300 python3 -m nanoinfer.bench --model qwen3-0.6b --peer transformers --peer-requests 64 --json-out "$OUT/peer.json"
fi
