"""Where a decode step's wall time goes on a GPU, from a torch.profiler trace: kernel time, gaps inside a
step (between kernels of the CUDA graph or of eager work), gaps between steps; plus the floor one tiny
kernel costs inside a CUDA graph, and GEMM times measured inside CUDA graphs (no launch overhead).

    python scripts/step_gaps.py OUT.json [--model qwen3-0.6b]
"""

import argparse
import json
import os
import tempfile
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from nanoinfer import LLM, SamplingParams
from nanoinfer.bench import named_workload
from nanoinfer.profiling import _start_decoding

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--model", default="qwen3-0.6b")
p.add_argument("--sizes", default="")
p.add_argument("--gemms", action="store_true")
p.add_argument("--windows", default="20,200,500,800")
args = p.parse_args()
results = {"card": torch.cuda.get_device_name()}


def graph_time_ms(fn, calls=20, replays=10):
    """GPU time of one call of ``fn`` when ``calls`` of them replay as one CUDA graph."""
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    g.replay()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(replays):
        g.replay()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / replays / calls


if args.gemms:
    # The floor: one tiny kernel in a graph.
    tiny = torch.zeros(256, device="cuda")
    results["tiny_kernel_in_graph_us"] = graph_time_ms(lambda: tiny.add_(1.0), calls=400) * 1e3

    shapes = {"qkv": (4096, 1024), "o": (1024, 2048), "gate_up": (6144, 1024), "down": (1024, 3072),
              "lm_head": (151936, 1024)}
    results["gemm_us"] = {}
    for lib in ("default", "cublaslt"):
        if lib == "cublaslt":
            torch.backends.cuda.preferred_blas_library("cublaslt")
        for m in (1, 16, 64, 128, 256):
            row = {}
            for name, (n, k) in shapes.items():
                w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
                x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
                row[name] = round(graph_time_ms(lambda: F.linear(x, w), calls=5 if name == "lm_head" else 20) * 1e3, 2)
            row["per_step_us"] = round(sum(v for k, v in row.items() if k != "lm_head") * 28 + row["lm_head"], 1)
            results["gemm_us"][f"{lib} m={m}"] = row
            print(lib, m, row, flush=True)
    torch.backends.cuda.preferred_blas_library("default")


def analyse(prof, steps, wall_s):
    path = os.path.join(tempfile.mkdtemp(), "trace.json")
    prof.export_chrome_trace(path)
    events = json.load(open(path))["traceEvents"]
    gpu = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                 key=lambda e: e["ts"])
    # Steps on the GPU: the decode kernels of layer 0 start each one; count between graph starts.
    spans = [(e["ts"], e["ts"] + e["dur"], e["name"]) for e in gpu]
    wall = spans[-1][1] - spans[0][0]
    busy = 0.0
    gaps = []
    end = spans[0][0]
    prev = ""
    for s, e, name in spans:
        if s > end:
            gaps.append((s - end, prev, name))
        busy += max(0.0, e - max(s, end))
        if e > end:
            end, prev = e, name
    small = sum(g for g, *_ in gaps if g < 5)
    big = sorted(gaps, reverse=True)
    kinds = Counter()
    for g, a, b in gaps:
        if g >= 5:
            kinds[(a[:60], b[:60])] += g
    per = steps
    by_name = Counter()
    for st, en, name in spans:
        by_name[name[:70]] += en - st
    return {"top_kernels_ms_per_step": [(round(v / per / 1e3, 3), k) for k, v in by_name.most_common(14)],"host_wall_ms_per_step": wall_s * 1e3 / steps,
        "gpu_span_ms_per_step": wall / per / 1e3, "busy_ms_per_step": busy / per / 1e3,
        "kernels_per_step": len(spans) / per,
        "gaps_under_5us_ms_per_step": small / per / 1e3,
        "gaps_over_5us_ms_per_step": sum(g for g, *_ in gaps if g >= 5) / per / 1e3,
        "largest_gaps_us": [(round(g, 1), a[:60], b[:60]) for g, a, b in big[:12]],
        "gap_kinds_ms_per_step": [(round(v / per / 1e3, 3), a, b) for (a, b), v in kinds.most_common(10)],
    }


def profiled_steps(llm, steps):
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            llm.engine.step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return analyse(prof, steps, wall)


def short(r):
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k not in ("largest_gaps_us", "top_kernels_ms_per_step")}


llm = LLM(args.model, max_num_seqs=512, max_num_batched_tokens=16384)
results["steps"] = {}
for num_seqs in [int(s) for s in args.sizes.split(",") if s]:
    _start_decoding(llm, num_seqs, 1024, 12)
    results["steps"][num_seqs] = profiled_steps(llm, 8)
    llm.engine.abort_all()
    print(num_seqs, json.dumps(short(results["steps"][num_seqs]), indent=1), flush=True)

# The real workload (nano-vllm's: mixed lengths, temperature 0.6), profiled at a few points of its decode.
work = named_workload("nano-vllm", llm.engine.hf_config.vocab_size)
for prompt, n in zip(work.prompts, work.output_lens):
    llm.engine.add_request(prompt, SamplingParams(temperature=work.temperature, max_tokens=n, ignore_eos=True))
windows = [int(x) for x in args.windows.split(",")]
decode_steps = 0
results["workload"] = {}
t0 = time.perf_counter()
while llm.engine.has_unfinished_requests():
    if decode_steps in windows:
        n = len(llm.scheduler.running)
        results["workload"][decode_steps] = r = {"running": n, **profiled_steps(llm, 8)}
        decode_steps += 8
        for t in r["top_kernels_ms_per_step"]:
            print("   ", t)
        print("workload step", decode_steps, json.dumps(short(r), indent=1), flush=True)
        continue
    llm.engine.step()
    if not llm.scheduler.waiting and all(s.num_uncomputed_tokens <= 1 for s in llm.scheduler.running):
        decode_steps += 1
llm.shutdown()
json.dump(results, open(args.out, "w"), indent=1)
