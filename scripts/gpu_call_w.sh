#!/usr/bin/env bash
# GPU call W (2 GPUs, session 8): stage "suite" runs every GPU-marked test in tests/ but the dead-rank
# ones, stage "dead" those; stages "branch-tests" and "branch-tp SIZES..." run the branch
# tp-fused-allreduce-norm's call V from branch.tgz (`git archive tp-fused-allreduce-norm | gzip`, an
# untracked file in the repository root that travels with the working tree) unpacked in /tmp/branch.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
while [ $# -gt 0 ]; do
  case $1 in
    suite) step suite 560 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ -rs \
             -k "not dead_rank and not outlives" ;;
    dead) step dead 500 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs \
            -k "dead_rank or outlives" ;;
    branch-*)
      mkdir -p /tmp/branch && tar -xzf branch.tgz -C /tmp/branch
      stage=${1#branch-}; shift
      (cd /tmp/branch && PYTHONPATH=/tmp/branch bash scripts/gpu_call_v.sh "$stage" "$@")
      exit ;;
    *) echo "unknown stage: $1" | tee -a "$OUT/$LOG"; exit 2 ;;
  esac
  shift
done
