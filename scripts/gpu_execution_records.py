"""The GPU side of notebook 03 (GPU execution), measured in one run on one GPU, written as one JSON record.

    python scripts/gpu_execution_records.py OUT.json --commit HASH

Random weights of the SmolLM2-135M shape (the notebook's default model), bfloat16:
  steps      eager (enforce_eager=True) and CUDA graphs, each at batch 1, 2, 4, ..., 256: every request a
             128-token random prompt and 96 greedy tokens. Kept per decode step: seconds and num_sampled (the
             notebook turns them into the performance-report table with Exercise 3.5), the medians of the
             step-time split (schedule, prepare, forward, sample, postprocess), and the graph coverage.
  attention  one layer's attention (9 query heads, 3 KV heads, head_dim 64) through naive_attention, the
             torch backend (PyTorch's scaled_dot_product_attention), the triton backend (fresh prefills
             through PyTorch's varlen flash attention) and its paged Triton kernel, as the context grows:
             milliseconds of 5 runs and the allocator's peak (torch.cuda.max_memory_allocated) above what was
             allocated before; prefill of one prompt, and decode of 32 sequences.
  profile    nanoinfer.tools.profiling.profile_decode at 1 and 32 sequences of 512 tokens, graphs and eager.

Run from the repository root on a machine with one GPU. Record made with it:
notebooks/reference_results/h200_gpu_execution.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from nanoinfer import LLM, SamplingParams
from nanoinfer.attention.triton_backend import TritonAttentionBackend
from nanoinfer.fast.cuda_graphs import GraphCoverage
from nanoinfer.tools.bench import environment
from nanoinfer.tools.profiling import attention_cost, profile_decode

MODEL = "smollm2-135m"
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
PROMPT, OUTPUT = 128, 96
PARTS = ["schedule_s", "prepare_s", "forward_s", "sample_s", "postprocess_s"]


def step_runs(eager: bool) -> dict:
    llm = LLM(MODEL, max_model_len=1024, max_num_seqs=max(BATCHES), enforce_eager=eager,
              gpu_memory_utilization=0.3)
    runs = {"engine": repr(llm), "warmup_s": llm.engine.warmup_seconds, "batches": {}}
    rng = random.Random(0)
    for batch in BATCHES:
        prompts = [[rng.randrange(1000, 40000) for _ in range(PROMPT)] for _ in range(batch)]
        params = SamplingParams(temperature=0.0, max_tokens=OUTPUT, ignore_eos=True)
        llm.generate(prompts[:1], SamplingParams(max_tokens=4), use_tqdm=False)  # (any lazy set-up)
        llm.reset_metrics()
        if llm.model_runner.graphs is not None:
            llm.model_runner.graphs.coverage = GraphCoverage()
        t0 = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        wall = time.perf_counter() - t0
        timeline = llm.step_timeline()
        decode = timeline[timeline.phase == "decode"]
        graphs = llm.model_runner.graphs
        runs["batches"][str(batch)] = {
            "wall_s": wall, "steps": len(timeline), "decode_steps": len(decode),
            "decode_seconds": [round(float(x), 7) for x in decode.seconds],
            "decode_num_sampled": [int(x) for x in decode.num_sampled],
            "median_ms": {p.removesuffix("_s"): float(decode[p].median() * 1e3) for p in PARTS + ["seconds"]},
            "summary": llm.engine.metrics.summary(),
            "cuda_graphs": graphs.coverage.as_dict() if graphs is not None else None,
        }
        print(f"eager={eager} batch {batch}: {wall:.2f} s, median step "
              f"{runs['batches'][str(batch)]['median_ms']['seconds']:.2f} ms", flush=True)
    runs["graph_sizes"] = llm.model_runner.graphs.sizes if llm.model_runner.graphs is not None else None
    llm.shutdown()
    return runs


def attention_runs() -> list[dict]:
    cases = [(False, 1, L) for L in (1024, 2048, 4096, 8192, 16384, 32768)]
    cases += [(True, 32, L) for L in (1024, 4096, 16384)]
    backends = {"naive": "naive", "torch": "torch", "triton": "triton",
                "triton paged": TritonAttentionBackend(prefill_with_torch_varlen=False)}
    rows = []
    for decode, num_seqs, length in cases:
        reference = None
        for label, backend in backends.items():
            if label == "naive" and length > 16384:
                continue  # its score matrix alone would be 9 x 32768^2 x 4 bytes in float32: 36 GiB
            r = attention_cost(backend, length, num_seqs=num_seqs, decode=decode, device="cuda",
                               dtype=torch.bfloat16, repeats=5)
            out = r.pop("output").float()
            reference = out if reference is None else reference
            r.update(label=label, max_abs_diff_to_first=float((out - reference).abs().max()),
                     largest_tensor_shape=list(r["largest_tensor_shape"]))
            rows.append(r)
            print(f"attention {'decode' if decode else 'prefill'} {label} L={length}: "
                  f"{min(r['ms']):.3f} ms, peak {r['peak_bytes'] / 2**20:.1f} MiB", flush=True)
            torch.cuda.empty_cache()
    return rows


def profiles() -> list[dict]:
    rows = []
    for eager in (False, True):
        llm = LLM(MODEL, max_model_len=1024, max_num_seqs=32, enforce_eager=eager, gpu_memory_utilization=0.3)
        for num_seqs in (1, 32):
            table = profile_decode(llm, num_seqs=num_seqs, context_len=512, steps=5, top_kernels=12)
            rows.append({"enforce_eager": eager, "num_seqs": num_seqs, "context_len": 512,
                         "wall_ms_per_step": table.attrs["wall_ms_per_step"],
                         "ms_per_step": table["ms_per_step"].to_dict(),
                         "host_ms_per_step": table.attrs["host_ms_per_step"],
                         "top_kernels": table.attrs["top_kernels"]})
            print(f"profile eager={eager} num_seqs={num_seqs}: {table.attrs['wall_ms_per_step']:.2f} ms/step", flush=True)
        llm.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--commit", required=True, help="the commit (and any uncommitted state) measured")
    args = parser.parse_args()
    record = {
        "card": f"1 x {torch.cuda.get_device_name()} (device tool nvidia-h200)",
        "date": time.strftime("%Y-%m-%d"),
        "command": f"python scripts/gpu_execution_records.py $OUT/h200_gpu_execution.json --commit '{args.commit}'",
        "commit": args.commit,
        "model": f"{MODEL} shape, random weights, bfloat16",
        "workload": {"batches": BATCHES, "prompt_tokens": PROMPT, "output_tokens": OUTPUT, "temperature": 0.0},
        "env": environment(),
    }
    sections = [("steps", lambda: {"graphs": step_runs(eager=False), "eager": step_runs(eager=True)}),
                ("attention", attention_runs), ("profiles", profiles)]
    for name, measure in sections:
        record[name] = measure()
        with open(args.out, "w") as f:  # after each section: a later failure keeps what was measured
            json.dump(record, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
