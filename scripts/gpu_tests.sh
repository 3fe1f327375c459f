#!/usr/bin/env bash
# The GPU-marked tests in parts that each fit in one 10-minute device call (verbose, with durations, the log
# in $OUT/tests.txt). Parts, in any order:
#   single   the tests that use one GPU
#   multi    the tensor-parallel tests (2 GPUs), each engine in a child process; not the dead-rank ones
#   dead     the two dead-rank tests (about 5 minutes)
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=tests.txt
MULTI="peer_memory or tensor_parallel or communication or shards or fused_with_the_norm"
DEAD="dead_rank or outlives"
status=0  # the last failing part's exit status
while [ $# -gt 0 ]; do
  case $1 in
    single) step single 560 python3 -m pytest -v -p no:cacheprovider -m gpu tests/ -rs --durations=0 -k "not ($MULTI) and not ($DEAD)" || status=$? ;;
    multi) step multi 560 python3 -m pytest -v -p no:cacheprovider -m gpu tests/ -rs --durations=0 -k "($MULTI) and not ($DEAD)" || status=$? ;;
    dead) step dead 500 python3 -m pytest -v -p no:cacheprovider -m gpu tests/ -rs --durations=0 -k "$DEAD" || status=$? ;;
    *) echo "unknown part: $1" | tee -a "$OUT/$LOG"; exit 2 ;;
  esac
  shift
done
exit $status
