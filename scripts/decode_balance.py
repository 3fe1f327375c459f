"""Does the decode-attention kernel lose time to uneven context lengths? The batch of nano-vllm's workload
at a few decode steps (real length mixes), against the same tokens spread evenly, with the context cut
into a few splits or not. Prints ms and TB/s per case.

    python scripts/decode_balance.py OUT.json
"""

import json
import sys

import numpy as np
import torch
import triton

from nanoinfer.bench import named_workload
from nanoinfer.layers.attention_triton import LOG2E, _decode_kernel, _decode_reduce_kernel
from cuda_timing import best_ms as timed  # ms per call, best of 3

dev = torch.device("cuda")
heads, kv_heads, head_dim, bs = 16, 8, 128, 16
work = named_workload("nano-vllm", 151936)
P = np.array([len(p) for p in work.prompts])
O = np.array(work.output_lens)


def run_case(lens):
    n = len(lens)
    width = -(-max(lens) // bs)
    total_blocks = sum(-(-x // bs) for x in lens)
    k_cache = torch.randn(total_blocks, bs, kv_heads, head_dim, dtype=torch.bfloat16, device=dev)
    v_cache = torch.randn_like(k_cache)
    perm = torch.randperm(total_blocks, dtype=torch.int32).tolist()
    tables = torch.zeros(n, width, dtype=torch.int32)
    i = 0
    for r, x in enumerate(lens):
        nb = -(-x // bs)
        tables[r, :nb] = torch.tensor(perm[i:i + nb])
        i += nb
    tables = tables.to(dev)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device=dev)
    q = torch.randn(n, heads, head_dim, dtype=torch.bfloat16, device=dev)
    o = torch.empty_like(q)
    kv_bytes = 2 * sum(lens) * kv_heads * head_dim * 2
    out = {}
    for splits in (1, 2, 4, 8):
        part_acc = torch.empty(n * heads * splits * head_dim, dtype=torch.float32, device=dev)
        part_ml = torch.empty(n * heads * splits * 2, dtype=torch.float32, device=dev)

        def fn():
            _decode_kernel[(n, kv_heads, splits)](
                q, k_cache, v_cache, o, part_acc, part_ml, tables, seq_lens, 0.088 * LOG2E, q.stride(0),
                q.stride(1), o.stride(0), o.stride(1), *k_cache.stride()[:3], tables.stride(0), heads,
                heads // kv_heads, head_dim, NUM_SPLITS=splits, BLOCK_SIZE=bs, BLOCK_G=16, BLOCK_N=64,
                BLOCK_D=128, PRECISION="tf32", num_warps=4, num_stages=2)
            if splits > 1:
                _decode_reduce_kernel[(n, heads)](o, part_acc, part_ml, o.stride(0), o.stride(1), heads, head_dim,
                                                  NUM_SPLITS=splits, BLOCK_S=triton.next_power_of_2(splits),
                                                  BLOCK_D=128)
        ms = timed(fn)
        out[f"splits={splits}"] = {"ms": round(ms, 4), "TBps": round(kv_bytes / ms / 1e9, 3)}
    return {"num_seqs": n, "min_len": min(lens), "max_len": max(lens), "mean_len": sum(lens) / n, **out}


results = {"card": torch.cuda.get_device_name()}
for step in (50, 300, 600, 850):
    alive = O > step
    lens = (P + step)[alive].tolist()
    mean = int(round(sum(lens) / len(lens)))
    results[f"step {step} real"] = run_case(lens)
    results[f"step {step} longest first"] = run_case(sorted(lens, reverse=True))
    results[f"step {step} even"] = run_case([mean] * len(lens))
    print(step, json.dumps(results[f"step {step} real"]), "\n   sorted:", json.dumps(results[f"step {step} longest first"]), "\n   even:", json.dumps(results[f"step {step} even"]),
          flush=True)
    torch.cuda.empty_cache()
json.dump(results, open(sys.argv[1], "w"), indent=1)
