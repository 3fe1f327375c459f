#!/usr/bin/env bash
# GPU call U (2+ GPUs for the tensor-parallel tests; for the next session): the whole GPU suite after
# session 7's changes (workers run the caller's exercise selection; the Llama fused-prologue test
# rewritten). Stage "suite": all but the dead-rank tests; stage "dead": those (each may take minutes);
# stage "bench": issue 3's workload, for an H100 when one is lent.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
for stage in "$@"; do
  case $stage in
    suite) step suite 500 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs \
             -k "not dead_rank and not outlives" ;;
    dead) step dead 500 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs \
            -k "dead_rank or outlives" ;;
    bench) step bench 150 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json" ;;
  esac
done
