#!/usr/bin/env bash
# GPU call J (2 GPUs): the multi-GPU tests after the review's fixes to the dead-rank path (NCCL async
# error handling 2, exit without teardown only when the peer buffer was kept), including a caller that
# outlives the dead rank by 150 s.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step multi_gpu_tests 560 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -k "peer_memory or dead_rank or outlives" -rs
