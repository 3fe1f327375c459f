#!/usr/bin/env bash
# GPU call K (2 GPUs): row-parallel outputs summed in place in the peer-memory buffers. The tests that
# cover it (peer all-reduce incl. the in-place slots; TP=2 bf16 logits against TP=1), then TP scaling
# with in-place sums, with the previous copies ("2copy") and TP=1 on the same machine.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step tp_tests 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -k "peer_memory or tensor_parallel_bf16" -rs
step tp 420 python3 scripts/tp_scaling.py "$OUT/tp.jsonl" ${TP_SIZES:-2 2copy 1}
