"""What bounds a decode step on this GPU: the card's copy and read bandwidth (a 2 GB bf16 tensor copied
and summed), the Triton decode-attention kernel under 18 launch configurations (block width, warps,
stages) at 256x1024, 128x1536, 64x1536 and 16x1024 sequences x tokens of context (Qwen3-0.6B's 16 query
and 8 KV heads of 128), in ms and TB/s of keys and values read, and the per-layer GEMMs of Qwen3-0.6B at
1-256 rows in us and TB/s of weights read. Written to OUT.json; a short line per case is printed.

    python scripts/decode_kernel_sweep.py OUT.json

Run from the repository root on a machine with one GPU. Record made with it: the "sweep" section of
notebooks/reference_results/h200_decode_diagnostics.json.
"""

import json
import sys

import torch
import torch.nn.functional as F
import triton

from nanoinfer.attention.triton_backend import LOG2E, _decode_kernel, decode_splits_for
from cuda_timing import best_ms as timed  # ms per call, best of 3

torch.manual_seed(0)
dev = torch.device("cuda")
results = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}


# ---- bandwidth references -------------------------------------------------------------------------
big = torch.empty(1 << 30, dtype=torch.bfloat16, device=dev).normal_()
out = torch.empty_like(big)
results["copy_TBps"] = 2 * big.numel() * 2 / timed(lambda: out.copy_(big), 5) / 1e9
results["sum_read_TBps"] = big.numel() * 2 / timed(lambda: big.sum(dtype=torch.float32), 5) / 1e9
big = out = None  # free the 4 GB
print("bandwidth", results["copy_TBps"], results["sum_read_TBps"], flush=True)


def decode_case(num_seqs, ctx, block_size=16, heads=16, kv_heads=8, head_dim=128):
    blocks_per_seq = -(-ctx // block_size)
    num_blocks = num_seqs * blocks_per_seq
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, dtype=torch.bfloat16, device=dev)
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(num_blocks, device=dev, dtype=torch.int32).view(num_seqs, blocks_per_seq)
    lens = torch.full((num_seqs,), ctx, dtype=torch.int32, device=dev)
    q = torch.randn(num_seqs, heads, head_dim, dtype=torch.bfloat16, device=dev)
    o = torch.empty_like(q)
    kv_bytes = 2 * num_seqs * ctx * kv_heads * head_dim * 2
    rows = {}
    group = heads // kv_heads

    def launch(block_n, warps, stages, splits):  # as the backend launches it, without dependent launch
        part_acc = torch.empty(num_seqs * heads * splits * head_dim, dtype=torch.float32, device=dev)
        part_ml = torch.empty(num_seqs * heads * splits * 2, dtype=torch.float32, device=dev)
        return lambda: _decode_kernel[(kv_heads, num_seqs, splits)](
            q, k_cache, v_cache, o, part_acc, part_ml, tables, lens, 0.088 * LOG2E, q.stride(0), q.stride(1),
            o.stride(0), o.stride(1), *k_cache.stride()[:3], tables.stride(0), heads, group, head_dim, 1,
            NUM_SPLITS=splits, BLOCK_SIZE=block_size, BLOCK_G=16, BLOCK_N=block_n, BLOCK_D=128,
            PRECISION="tf32", PREFETCH=False, USE_PDL=False, num_warps=warps, num_stages=stages)

    splits0 = decode_splits_for(ctx, num_seqs, kv_heads)
    configs = [("head_major", bn, w, s) for bn in (32, 64, 128) for w in (4, 8) for s in (2, 3, 4)]
    for kind, bn, w, s in configs:
        try:
            ms = timed(launch(bn, w, s, splits0))
        except Exception as e:  # out of shared memory for a config: skip it
            print(kind, bn, w, s, "failed", type(e).__name__, flush=True)
            continue
        rows[f"{kind} n{bn} w{w} s{s}"] = {"ms": ms, "TBps": kv_bytes / ms / 1e9}
    best = min(rows, key=lambda k: rows[k]["ms"])
    cur = rows.get("head_major n64 w4 s2")  # the shipped configuration
    print(f"decode {num_seqs}x{ctx} splits={splits0}: current {cur}, best {best} {rows[best]}", flush=True)
    return {"splits": splits0, "kv_bytes": kv_bytes, "configs": rows, "best": best}


results["decode"] = {}
for n, ctx in ((256, 1024), (128, 1536), (64, 1536), (16, 1024)):
    results["decode"][f"{n}x{ctx}"] = decode_case(n, ctx)
    torch.cuda.empty_cache()

# ---- GEMMs of Qwen3-0.6B (hidden 1024, q 2048, kv 2x1024, intermediate 3072, vocab 151936) ------------
shapes = {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072),
          "lm_head": (151936, 1024)}
results["gemm"] = {}
for m in (1, 16, 64, 128, 256):
    row = {}
    for name, (n, k) in shapes.items():
        w = torch.randn(n, k, dtype=torch.bfloat16, device=dev)
        x = torch.randn(m, k, dtype=torch.bfloat16, device=dev)
        ms = timed(lambda: F.linear(x, w), 50)
        row[name] = {"us": ms * 1e3, "TBps": n * k * 2 / ms / 1e9}
    total = sum(r["us"] for n_, r in row.items() if n_ != "lm_head") * 28 + row["lm_head"]["us"]
    row["step_us"] = total
    results["gemm"][m] = row
    print("gemm", m, {k: round(v["us"], 1) if isinstance(v, dict) else round(v, 1) for k, v in row.items()},
          flush=True)

json.dump(results, open(sys.argv[1], "w"), indent=1)
