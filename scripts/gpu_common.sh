# Sourced by the GPU-machine scripts: environment, and `step NAME TIMEOUT CMD...` which logs to $OUT.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=$PWD:${PYTHONPATH:-}
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv;
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"; } >> "$OUT/env.txt" 2>&1
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name: $*" >> "$OUT/$LOG"
  timeout "$limit" "$@" >> "$OUT/$LOG" 2>&1
  local rc=$?
  echo "== $name rc=$rc ($((SECONDS - t0)) s)" | tee -a "$OUT/$LOG"
  return $rc
}
