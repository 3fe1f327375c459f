#!/usr/bin/env bash
# GPU call O (one H200): the fused attention prologue (q/k norms + rotary + KV write in one Triton kernel):
# its tests on the GPU (bf16 included), the GPU suite, nano-vllm's workload with and without it (same
# machine, alternating), and the prefill profile with it.
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step unit_tests 120 python3 -m pytest -q -p no:cacheprovider tests/test_qk_prologue_triton.py tests/test_sampler_triton.py
step fused_gpu_test 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -k "fused or equal or compiled or bf16"
step bench_fused 120 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench_fused.json"
step bench_separate 120 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --no-fused-attention-prologue --json-out "$OUT/bench_separate.json"
step bench_fused2 120 python3 -m nanoinfer.bench --model qwen3-0.6b --peer none --json-out "$OUT/bench_fused2.json"
step prefill 100 python3 scripts/prefill_profile.py "$OUT/prefill.txt"
