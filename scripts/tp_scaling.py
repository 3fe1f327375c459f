"""Tensor-parallel scaling on one machine: the same workload and model shape at each TP size.

    python scripts/tp_scaling.py OUT.jsonl 1 2 4 4nccl

A size followed by "nccl" sends every all-reduce through NCCL (no peer-memory all-reduce), for comparison;
one followed by "copy" uses peer memory but copies row-parallel outputs into and out of its buffer, and
"oneshot" sums row-parallel outputs with the one-shot kernel instead of the two-shot one.

Throughput comes from a full generate; the communication share from a profile of decode steps
(NCCL kernel time over all kernel time on rank 0, at 256 sequences of 1024 tokens).
"""

import json
import os
import time

from nanoinfer import LLM
from nanoinfer.distributed import all_reduce_path
from nanoinfer.bench import environment, named_workload, run_nanoinfer
from nanoinfer.profiling import profile_decode
from per_size import run_per_size

MODEL, WORKLOAD = "qwen3-8b", "code_gen"  # 256 requests, 512 prompt and 512 output tokens each


def main(out_path: str, size: str) -> None:
    tp = int(size.removesuffix("nccl").removesuffix("copy").removesuffix("oneshot"))
    os.environ["NANOINFER_ALL_REDUCE"] = ("nccl" if size.endswith("nccl") else
                                          "peer-copy" if size.endswith("copy") else
                                          "peer-oneshot" if size.endswith("oneshot") else "peer")
    t0 = time.perf_counter()
    try:
        llm = LLM(MODEL, tensor_parallel_size=tp, max_model_len=2048, max_num_seqs=256)
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
