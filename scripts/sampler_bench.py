"""Time one temperature-0.6 sampling step at decode batch sizes: Exercise 3.2's reference compiled by
torch.compile (the engine's path before) against the Triton kernels (sampler_triton.py).

    python scripts/sampler_bench.py OUT.json
"""

import json
import sys

import torch

from nanoinfer.extensions import solution
from nanoinfer.layers.sampler_triton import gumbel_max_sample_triton

compiled = torch.compile(solution("3.2"), dynamic=True)
results = {"card": torch.cuda.get_device_name()}


def timed(fn, iters=50):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / iters * 1e3


for rows in (1, 16, 64, 128, 256):
    logits = torch.randn(rows, 151936, dtype=torch.bfloat16, device="cuda") * 3
    noise = torch.empty(logits.shape, device="cuda").exponential_()
    t = torch.full((rows,), 0.6, device="cuda")
    same = torch.equal(compiled(logits.float(), t, noise), gumbel_max_sample_triton(logits, t, noise))
    results[rows] = {"reference_compiled_us (with the float cast)": timed(lambda: compiled(logits.float(), t, noise)),
                     "triton_us": timed(lambda: gumbel_max_sample_triton(logits, t, noise)),
                     "noise_us": timed(lambda: noise.exponential_()), "same_tokens": same}
    print(rows, results[rows], flush=True)
json.dump(results, open(sys.argv[1], "w"), indent=1)
