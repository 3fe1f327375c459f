"""Time one temperature-0.6 sampling step on a GPU at decode batch sizes (1 to 256 rows of bf16 logits over
the Qwen3 vocabulary of 151,936 entries): Exercise 3.2's reference compiled by torch.compile (with the float
cast it needs), the Triton sampler given a noise tensor, the kernel that draws that noise, and the seeded
Triton sampler that makes its noise inside the kernel (the engine's sampler on a GPU). Microseconds per
call (the mean of 50 calls after a warm-up, launches included) and whether each pair picks the same
tokens; written to OUT.json.

    python scripts/sampler_bench.py OUT.json

Run from the repository root on a machine with one GPU. Records made with it: the "sampler" section of
notebooks/reference_results/h200_decode_diagnostics.json (before the seeded kernel existed) and
h200_sampler_seeded_vs_noise.json.
"""

import json
import sys

import torch

from nanoinfer.layers.sampler import gumbel_max_sample
from nanoinfer.fast.sampler_triton import (gumbel_max_sample_triton, seeded_exponential_noise,
                                           seeded_gumbel_max_triton)
from cuda_timing import best_ms

compiled = torch.compile(gumbel_max_sample, dynamic=True)
results = {"card": torch.cuda.get_device_name()}


def timed(fn, iters=50):
    return best_ms(fn, iters, repeats=1) * 1e3  # us per call, one run


for rows in (1, 16, 64, 128, 256):
    logits = torch.randn(rows, 151936, dtype=torch.bfloat16, device="cuda") * 3
    noise = torch.empty(logits.shape, device="cuda").exponential_()
    t = torch.full((rows,), 0.6, device="cuda")
    same = torch.equal(compiled(logits.float(), t, noise), gumbel_max_sample_triton(logits, t, noise))
    seeds = torch.randint(0, 2**62, (rows,), device="cuda")
    seeded_same = torch.equal(seeded_gumbel_max_triton(logits, t, seeds)[0],
                              gumbel_max_sample_triton(logits, t, seeded_exponential_noise(seeds, logits.shape[1])))
    results[rows] = {"reference_compiled_us (with the float cast)": timed(lambda: compiled(logits.float(), t, noise)),
                     "triton_us": timed(lambda: gumbel_max_sample_triton(logits, t, noise)),
                     "noise_us": timed(lambda: noise.exponential_()), "same_tokens": same,
                     "seeded_triton_us": timed(lambda: seeded_gumbel_max_triton(logits, t, seeds)),
                     "seeded_same_tokens": seeded_same}
    print(rows, results[rows], flush=True)
json.dump(results, open(sys.argv[1], "w"), indent=1)
