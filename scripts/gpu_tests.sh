#!/usr/bin/env bash
# The GPU-marked tests (pytest -m gpu; `make test` hides the GPUs and runs the CPU suite) in parts that each
# fit in a 10-minute call on a lent GPU machine. Each part runs verbose, with durations, under a time limit;
# its output goes to $OUT/tests.txt, the machine's GPUs and software versions to $OUT/env.txt.
#
#   bash scripts/gpu_tests.sh single          # the tests that use one GPU: engine, then kernels (about 9 minutes
#                                             # on an H200, too close to a 10-minute call: there, run the two apart)
#   bash scripts/gpu_tests.sh engine          # tests/test_gpu.py (about 6 minutes)
#   bash scripts/gpu_tests.sh kernels         # the other single-GPU tests (about 3 minutes)
#   bash scripts/gpu_tests.sh multi           # the tensor-parallel tests (2+ GPUs), each engine in a child
#                                             # process of its own; not the dead-rank ones
#   bash scripts/gpu_tests.sh dead            # the two dead-rank tests (2+ GPUs, about 5 minutes)
#   bash scripts/gpu_tests.sh single multi    # parts run in the order given
#
# Runs from the repository root whatever the current directory. OUT defaults to /tmp/nanoinfer_gpu_tests.
# The exit status is the last failing part's (0 when all pass; 124 when a part ran out of time).
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
OUT=${OUT:-/tmp/nanoinfer_gpu_tests}
LOG=$OUT/tests.txt
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
} >> "$OUT/env.txt" 2>&1

MULTI="peer_memory or tensor_parallel or communication or shards or fused_with_the_norm"
DEAD="dead_rank or outlives"
ONE="not ($MULTI) and not ($DEAD)"
ENGINE="($ONE) and test_gpu.py" KERNELS="($ONE) and not test_gpu.py"

part() {  # part NAME SECONDS PYTEST-K-EXPRESSION: one pytest run under `timeout`, logged; returns pytest's status
  local name=$1 limit=$2 select=$3 t0=$SECONDS rc
  echo "== $name: -k \"$select\"" >> "$LOG"
  timeout "$limit" python3 -m pytest -v -p no:cacheprovider -m gpu tests/ -rs --durations=0 -k "$select" >> "$LOG" 2>&1
  rc=$?
  echo "== $name rc=$rc ($((SECONDS - t0)) s)" | tee -a "$LOG"
  return $rc
}

status=0
for name in "$@"; do
  case $name in
    single) part engine 560 "$ENGINE" || status=$?
            part kernels 560 "$KERNELS" || status=$? ;;
    engine) part engine 560 "$ENGINE" || status=$? ;;
    kernels) part kernels 560 "$KERNELS" || status=$? ;;
    multi) part multi 560 "($MULTI) and not ($DEAD)" || status=$? ;;
    dead) part dead 500 "$DEAD" || status=$? ;;
    *) echo "unknown part: $name (single, engine, kernels, multi or dead)" | tee -a "$LOG"; exit 2 ;;
  esac
done
exit $status
