#!/usr/bin/env bash
# GPU call P (2 GPUs): after the fused attention prologue, the Triton sampler, the shared rotary table and
# the longest-first decode order: the kernel tests on the GPU, then the GPU suite (both GPUs: the
# tensor-parallel tests see the prologue on sharded heads), less the two dead-rank tests (unchanged paths).
source "$(dirname "$0")/gpu_common.sh"
export OMP_NUM_THREADS=8
LOG=log.txt
step unit_tests 90 python3 -m pytest -q -p no:cacheprovider tests/test_qk_prologue_triton.py tests/test_sampler_triton.py
step gpu_suite 330 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ -k "not dead_rank" -rs
