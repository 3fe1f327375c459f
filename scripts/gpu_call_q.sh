#!/usr/bin/env bash
# GPU call Q (for the next session; any kind): the session-6 changes where they were not yet run or
# measured. First the GPU tests added after the last GPU run (fused prologue on a bf16 Llama, the Triton
# sampler on bf16 logits, the one-shot peer all-reduce with 2+ GPUs), then
#   one GPU : nano-vllm's workload (the H100 target when an H100 is lent), batch-1 latency, and the
#             64-request slice against transformers
#   2+ GPUs : TP scaling on the qwen3-8b shape: 1, 2, 2 with the one-shot all-reduce (and 4 with 4 GPUs)
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
GPUS=$(nvidia-smi -L | wc -l)
step new_tests 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs \
    -k "fused or triton_sampler or peer_memory"
step bench 150 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json"
if [ "$GPUS" -ge 2 ]; then
  SIZES="2 2oneshot 1"; [ "$GPUS" -ge 4 ] && SIZES="4 4oneshot 2 1"
  step tp 540 python3 scripts/tp_scaling.py "$OUT/tp.jsonl" $SIZES
else
  step batch1 90 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --num-requests 1 --min-prompt 128 \
      --max-prompt 128 --min-output 512 --max-output 512 --temperature 0 --max-num-seqs 8 --json-out "$OUT/batch1.json"
  step peer 300 python3 -m nanoinfer.bench --model qwen3-0.6b --peer transformers --peer-requests 64 --json-out "$OUT/peer.json"
fi
