#!/usr/bin/env bash
# GPU call N (one H200): the GPU suite after the sampler / rotary / batch-order changes, a prefill profile,
# and nano-vllm's workload twice (the run-to-run spread).
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step gpu_tests 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/
step sampler_tests 60 python3 -m pytest -q -p no:cacheprovider tests/test_sampler_triton.py tests/test_correctness.py -k "sampler or rotary_table or kernel"
step prefill 120 python3 scripts/prefill_profile.py "$OUT/prefill.txt"
step bench 120 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench.json"
step bench2 120 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench2.json"
