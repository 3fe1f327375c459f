"""Tensor-parallel scaling on one machine: the same workload and model shape at each TP size.

What it measures, per size: output tokens per second of a full generate of the ``code_gen`` workload
(256 requests of 512 prompt and 512 output tokens, temperature 0.6) on random weights of the Qwen3-8B
shape (bf16, CUDA graphs), the prefill and decode phases, host time per decode step by batch size (launch
against the step's wall time: is a size bound by the host or by the GPUs?), and a profile of 5 decode
steps at 256 sequences of 1,024 tokens on rank 0: kernel time by category, communication's share of it,
and the longest kernels. One JSON line per size is appended to OUT.jsonl.

    python scripts/tp_scaling.py OUT.jsonl 1 2 4      # on a machine with 4 GPUs; each size in its own process
    python scripts/tp_scaling.py OUT.jsonl 2 2nccl    # TP=2 with the peer-memory all-reduce, then NCCL only

A size followed by "nccl" sends every all-reduce through NCCL (``LLM(..., all_reduce="nccl")``); "copy"
keeps peer memory but copies row-parallel outputs into and out of its buffer (``"peer-copy"``); "oneshot"
sums row-parallel outputs with the one-shot kernel instead of the two-shot one (``"peer-oneshot"``). A
plain size uses the engine's default (peer memory where the GPUs allow it, NCCL otherwise). Each size
runs in a process of its own (a second peer-memory engine in one process falls back to NCCL). Run from the
repository root; the records made with it are notebooks/reference_results/h*x*_tp_*.json.
"""

import json
import time

from per_size import run_per_size

from nanoinfer import LLM
from nanoinfer.parallel.comm import all_reduce_path
from nanoinfer.tools.bench import environment, named_workload, run_nanoinfer
from nanoinfer.tools.profiling import profile_decode

MODEL, WORKLOAD = "qwen3-8b", "code_gen"  # 256 requests, 512 prompt and 512 output tokens each
SUFFIXES = {"nccl": "nccl", "copy": "peer-copy", "oneshot": "peer-oneshot"}  # size suffix -> all_reduce knob


def main(out_path: str, size: str) -> None:
    suffix = next((s for s in SUFFIXES if size.endswith(s)), None)
    tp = int(size.removesuffix(suffix) if suffix else size)
    t0 = time.perf_counter()
    try:
        knobs = {"all_reduce": SUFFIXES[suffix]} if suffix else {}  # (a plain size: the engine's default)
        llm = LLM(MODEL, tensor_parallel_size=tp, max_model_len=2048, max_num_seqs=256, **knobs)
    except Exception as error:  # record it (the other sizes run in processes of their own)
        print(json.dumps({"tp": tp, "size": size, "error": repr(error)}), flush=True)
        return
    startup = time.perf_counter() - t0
    path = all_reduce_path()
    workload = named_workload(WORKLOAD, llm.engine.hf_config.vocab_size, seed=0)
    result = run_nanoinfer(llm, workload)
    phases = llm.engine.metrics.summary()
    # Host time per decode step by batch size: launch (prepare + send to the workers) against the step's
    # wall time tells whether a size is bound by the host or by the GPUs.
    tl = llm.step_timeline()
    decode = tl[tl.phase == "decode"]
    host = {}
    for lo, hi in ((1, 64), (65, 192), (193, 100000)):
        part = decode[(decode.num_seqs >= lo) & (decode.num_seqs <= hi)]
        if len(part):
            host[f"{lo}-{hi} seqs"] = {"steps": len(part), **{
                k: round(1e3 * float(part[c].mean()), 3) for k, c in
                (("step_ms", "seconds"), ("schedule_ms", "schedule_s"), ("launch_ms", "model_s"),
                 ("wait_and_postprocess_ms", "postprocess_s"))}}
    table = profile_decode(llm, num_seqs=256, context_len=1024, steps=5)
    comm = float(table["ms_per_step"].get("communication", 0.0))
    kernels = float(table["ms_per_step"].drop("CPU overhead (device idle)", errors="ignore").sum())
    record = {"tp": tp, "all_reduce": path, "model": MODEL, "workload": WORKLOAD, "startup_s": startup,
              "seconds": result.seconds, "tokens_per_s": result.generated_per_s, "phases": phases,
              "decode_host_ms": host, "decode_profile_ms": table["ms_per_step"].round(3).to_dict(),
              "decode_wall_ms_per_step": table.attrs["wall_ms_per_step"],
              "comm_share_of_kernel_time": comm / kernels if kernels else 0.0,
              "decode_profile_top_kernels": [{**k, "ms_per_step": round(k["ms_per_step"], 4)}
                                             for k in table.attrs["top_kernels"]],
              "env": environment()}
    print(json.dumps(record), flush=True)
    with open(out_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    llm.shutdown()


if __name__ == "__main__":
    run_per_size(__file__, main)
